/*
** cmd_db.c: hattn db list|show|export|import|prune|verify: look after the
** kernel database (db/db.h).
*/
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "db.h"
#include "tools.h"

static const char db_usage[] =
  "usage: hattn db ACTION [options]\n"
  "\n"
  "Look after the kernel database: compiled kernels and tuning records, kept\n"
  "in $HATTN_DB, else $XDG_CACHE_HOME/hattn/hattn.db, else ~/.cache/hattn/hattn.db.\n"
  "\n"
  "actions:\n"
  "  list               every device, kernel and tuning record, one line each\n"
  "  show KEY           the kernel KEY, or every tuning of the kernel class KEY\n"
  "                     with all its candidates (exit 1 when there is neither)\n"
  "  export FILE        write tuning records and kernels to the portable FILE,\n"
  "                     for machines of the same device model\n"
  "  import FILE        add the tuning records (the winning configurations) of\n"
  "                     FILE for every device it names; their kernels are\n"
  "                     compiled here when first used.  Refused (exit 1) when\n"
  "                     FILE holds records of another compiler, or of a device\n"
  "                     not named by --device when that is given\n"
  "  prune              delete kernels and tunings older than --older-than DAYS,\n"
  "                     or built by a compiler other than the --compiler ones\n"
  "  verify             check the file, and every binary's checksum and HMAC:\n"
  "                     exit 0 when all are good, 1 otherwise\n"
  "\n"
  "options:\n"
  "      --db PATH         the database (default: see above)\n"
  "      --older-than DAYS prune: records created more than DAYS days ago\n"
  "      --compiler ID     prune: keep only records of this compiler (repeat);\n"
  "                        export: only this compiler's records; import: accept\n"
  "                        this compiler (repeat; default: this hattn's)\n"
  "      --device MODEL    export: only this device; import: accept only this\n"
  "                        device (repeat; default: every device FILE names)\n"
  "      --any-device      import: accept every device model (the default)\n"
  "      --any-compiler    import: accept every compiler\n"
  "      --with-binaries   import: take FILE's compiled kernels too.  hattn runs\n"
  "                        them as if it had compiled them, so only for a FILE\n"
  "                        you trust as much as a program you would run\n"
  "  -h, --help            this text\n"
  "\n"
  "Compilers are named as \"llvm 16.0.6\" or \"nvrtc 12.4\"; device models as\n"
  "'hattn db list' prints them.\n"
  "\n"
  "Stored binaries are run, so hattn uses only those it stored for you: each\n"
  "carries an HMAC under your key, $HATTN_CONFIG_DIR/db.key, else\n"
  "$XDG_CONFIG_HOME/hattn/db.key, else ~/.config/hattn/db.key (made on first\n"
  "use, mode 0600; refused when others may read or write it).  A binary\n"
  "without a valid HMAC (stored before hattn had keys, by another user, or\n"
  "edited) is ignored and compiled again.  A database that other users can\n"
  "write, or in a directory they can write, is refused.\n";

enum { MAX_LIST = 32 };

typedef struct db_opts {
  const char *path;
  double older_than;            /* < 0: not given */
  const char *compilers[MAX_LIST + 1];
  int ncompilers;
  const char *devices[MAX_LIST + 1];
  int ndevices;
  int any_device, any_compiler, with_binaries;
} db_opts;

static int add(const char *opt, const char **list, int *n, const char *s) {
  if (*n == MAX_LIST) {
    fprintf(stderr, "hattn db: %s: at most %d\n", opt, MAX_LIST);
    return -1;
  }
  list[(*n)++] = s;
  list[*n] = NULL;
  return 0;
}

/* The compilers of this build, "llvm X.Y.Z" and "nvrtc X.Y" (each
** backend's that has one), into LIST; BUF holds their names. */
static void build_compilers(char buf[2][64], const char **list, int *n) {
  const hattn__backend_i *be;
  int i;
  for (i = 0; i < 2 && (be = hattn__backend_at(i)) != NULL; i++) {
    const char *v = be->compiler_version ? be->compiler_version() : NULL;
    if (v == NULL) continue;
    snprintf(buf[i], sizeof buf[i], "%s %s", be->compiler_name, v);
    list[(*n)++] = buf[i];
  }
  list[*n] = NULL;
}

static int do_import(hattn__db *db, const char *file, db_opts *o) {
  char names[2][64], err[1024];
  const char **compilers = o->compilers;
  int64_t nt = 0, nk = 0;
  if (!o->any_compiler && o->ncompilers == 0) build_compilers(names, o->compilers, &o->ncompilers);
  if (hattn__db_import(db, file, o->with_binaries ? HATTN__DB_IMPORT_BINARIES : 0,
                       o->any_device || o->ndevices == 0 ? NULL : o->devices, o->any_compiler ? NULL : compilers,
                       &nt, &nk, err, sizeof err) != HATTN_OK) {
    fprintf(stderr, "hattn db: %s\n", err);
    return TOOL_FAIL;
  }
  if (o->with_binaries)
    printf("imported %lld tuning records and %lld kernels from %s into %s; the kernels are trusted as if "
           "compiled here\n", (long long)nt, (long long)nk, file, hattn__db_path(db));
  else
    printf("imported %lld tuning records from %s into %s; their kernels are compiled here when first used "
           "(--with-binaries takes the file's)\n", (long long)nt, file, hattn__db_path(db));
  return TOOL_OK;
}

int hattn__cmd_db(int argc, char **argv) {
  static const struct option opts[] = {
    {"db", required_argument, 0, 'D'},          {"older-than", required_argument, 0, 'O'},
    {"compiler", required_argument, 0, 'C'},    {"device", required_argument, 0, 'V'},
    {"any-device", no_argument, 0, 'A'},        {"any-compiler", no_argument, 0, 'B'},
    {"with-binaries", no_argument, 0, 'W'},     {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0}};
  static const char *const actions[] = {"list", "show", "export", "import", "prune", "verify", NULL};
  db_opts o = {NULL, -1, {NULL}, 0, {NULL}, 0, 0, 0, 0};
  hattn__db *db = NULL;
  const char *action, *arg = NULL;
  char err[1024], *end;
  int c, i, want_arg, rc = TOOL_USAGE;

  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'D': if (tool_parse_db(optarg, &o.path)) return TOOL_USAGE; break;
    case 'O':
      o.older_than = strtod(optarg, &end);
      if (end == optarg || *end || !(o.older_than >= 0) || o.older_than > 1e6) {
        fprintf(stderr, "hattn db: --older-than: expected a number of days, got '%s'\n", optarg);
        return TOOL_USAGE;
      }
      break;
    case 'C': if (add("--compiler", o.compilers, &o.ncompilers, optarg)) return TOOL_USAGE; break;
    case 'V': if (add("--device", o.devices, &o.ndevices, optarg)) return TOOL_USAGE; break;
    case 'A': o.any_device = 1; break;
    case 'B': o.any_compiler = 1; break;
    case 'W': o.with_binaries = 1; break;
    case 'h': fputs(db_usage, stdout); return TOOL_OK;
    default: fputs(db_usage, stderr); return TOOL_USAGE;
    }
  }
  if (optind >= argc) {
    fprintf(stderr, "hattn db: expected an action\n\n%s", db_usage);
    return TOOL_USAGE;
  }
  action = argv[optind];
  for (i = 0; actions[i] && strcmp(actions[i], action); i++) {
  }
  if (actions[i] == NULL) {
    fprintf(stderr, "hattn db: unknown action '%s'\n\n%s", action, db_usage);
    return TOOL_USAGE;
  }
  want_arg = !strcmp(action, "show") || !strcmp(action, "export") || !strcmp(action, "import");
  if (argc - optind - 1 != want_arg) {
    fprintf(stderr, "hattn db %s: expected %s\n\n%s", action,
            want_arg ? (strcmp(action, "show") ? "one FILE" : "one KEY") : "no arguments", db_usage);
    return TOOL_USAGE;
  }
  if (want_arg) arg = argv[optind + 1];
  if (!strcmp(action, "prune") && o.older_than < 0 && o.ncompilers == 0) {
    fprintf(stderr, "hattn db prune: give --older-than DAYS, --compiler ID, or both\n");
    return TOOL_USAGE;
  }
  if (!strcmp(action, "export") && (o.ncompilers > 1 || o.ndevices > 1)) {
    fprintf(stderr, "hattn db export: at most one --device and one --compiler\n");
    return TOOL_USAGE;
  }

  /* Actions that only read open read-only, and create nothing. */
  {
    int ro = !strcmp(action, "list") || !strcmp(action, "show") || !strcmp(action, "verify") ||
             !strcmp(action, "export");
    if (hattn__db_open(o.path, ro ? HATTN__DB_READONLY : 0, &db, err, sizeof err) != HATTN_OK) {
      fprintf(stderr, "hattn db: %s\n", err);
      return TOOL_FAIL;
    }
  }
  rc = TOOL_FAIL;
  if (!strcmp(action, "list")) {
    if (hattn__db_list(db, stdout, err, sizeof err) != HATTN_OK) goto fail_msg;
  } else if (!strcmp(action, "show")) {
    if (hattn__db_show(db, arg, stdout, err, sizeof err) != HATTN_OK) goto fail_msg;
  } else if (!strcmp(action, "export")) {
    int64_t nt = 0, nk = 0;
    if (hattn__db_export(db, arg, o.devices[0], o.compilers[0], &nt, &nk, err, sizeof err) != HATTN_OK)
      goto fail_msg;
    printf("exported %lld tuning records and %lld kernels to %s\n", (long long)nt, (long long)nk, arg);
  } else if (!strcmp(action, "import")) {
    if (do_import(db, arg, &o) != TOOL_OK) goto done;
  } else if (!strcmp(action, "prune")) {
    int64_t nk = 0, nt = 0;
    if (hattn__db_prune(db, o.older_than, o.ncompilers ? o.compilers : NULL, &nk, &nt, err, sizeof err) !=
        HATTN_OK)
      goto fail_msg;
    printf("pruned %lld kernels and %lld tuning records from %s\n", (long long)nk, (long long)nt,
           hattn__db_path(db));
  } else {
    int64_t nbad = 0;
    if (hattn__db_verify(db, stdout, &nbad, err, sizeof err) != HATTN_OK) goto fail_msg;
    if (nbad > 0) {
      printf("%s: %lld problems\n", hattn__db_path(db), (long long)nbad);
      goto done;
    }
    printf("%s: ok\n", hattn__db_path(db));
  }
  rc = TOOL_OK;
  goto done;
fail_msg:
  fprintf(stderr, "hattn db: %s\n", err);
done:
  hattn__db_close(db);
  return rc;
}
