/*
** cmd_tune.c: hattn tune: tune the kernels of a pattern (or of every
** pattern of a model) for problem shapes on the CPU or GPU 0, print every
** candidate, the winner and the record stored in the kernel database; with
** --repeat, tune again and report how often the winner agreed.
*/
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hattn.h"
#include "db.h"
#include "kernel_cache.h"
#include "tools.h"
#include "tuner.h"

static const char tune_usage[] =
  "usage: hattn tune FILE (--pattern P | --model M) --seqlen N[,M] [options]\n"
  "\n"
  "Tune pattern P of the spec FILE (or every pattern model M uses) on the CPU\n"
  "or GPU 0: each candidate configuration is checked against the float64\n"
  "reference on a small problem and thrown out when wrong, then timed (warm-up,\n"
  "repetitions, the median and the interquartile range as its spread, inputs\n"
  "rotated; the CPU's monotonic clock or device events).  The winner is the\n"
  "fastest, or the earliest candidate (the default first) within the fastest's\n"
  "spread and 3% of it.  The winner's binary and the tuning with every candidate\n"
  "are stored in the kernel database, keyed by device model, kernel class and\n"
  "shape bucket (key length to a power of two, a class of batch x heads).\n"
  "\n"
  "options:\n"
  "  -p, --pattern P       the pattern (optional when the file has one)\n"
  "  -m, --model M         every pattern of model M, with its heads, head dim, dtype\n"
  "      --backend B       cpu (the default) or cuda\n"
  "  -s, --seqlen N[,M]    query and key lengths; repeat for several buckets\n"
  "  -B, --batch N         batch entries (default 1); repeat for several buckets\n"
  "  -H, --heads N         query heads (default 8, or the model's)\n"
  "      --kv-heads N      key/value heads (default --heads, or the model's)\n"
  "  -d, --head-dim D      head dimension (default 128, or the model's)\n"
  "  -t, --dtype T         fp32 (the cpu default), fp16 or bf16 (the cuda default);\n"
  "                        with --model, the model's dtype unless given\n"
  "      --budget SECONDS  wall-clock budget of each tuning (default 60)\n"
  "  -r, --reps R          timed runs per candidate (default 15)\n"
  "      --threads N       CPU: at most N threads (default: every core)\n"
  "      --repeat N        tune each problem N times and report how often the\n"
  "                        winner agreed (same, or within the measured spread)\n"
  "      --db PATH         the kernel database (default $HATTN_DB, else the cache)\n"
  "      --no-store        do not write the database\n"
  "      --lookup          tune nothing: ask the runtime's kernel lookup for each\n"
  "                        problem, as a fresh process would, and print where the\n"
  "                        kernel came from (db, compiled) and how long it took\n"
  "  -q, --quiet           no progress on stderr\n"
  "  -h, --help            this text\n"
  "\n"
  "Progress goes to stderr: a bar when it is a terminal, a line a candidate\n"
  "otherwise, with the time elapsed, an estimate of what remains and the best\n"
  "time so far.  Exit 0 when every problem was tuned, 1 when one failed, 2 on bad\n"
  "input.\n";

enum { MAX_SHAPES = 16 };

typedef struct tune_args {
  const char *file, *pattern, *model, *backend, *db_path;
  int64_t lq[MAX_SHAPES], lk[MAX_SHAPES], batch[MAX_SHAPES];
  int nseq, nbatch;
  int64_t heads, kv_heads, head_dim, reps, threads, repeat;
  double budget;
  hattn__dtype dtype;
  int have_dtype, no_store, quiet, lookup;
} tune_args;

static int parse_args(int argc, char **argv, tune_args *a) {
  enum { O_BACKEND = 256, O_KVHEADS, O_BUDGET, O_THREADS, O_REPEAT, O_DB, O_NOSTORE, O_LOOKUP };
  static const struct option opts[] = {
    {"pattern", required_argument, 0, 'p'}, {"model", required_argument, 0, 'm'},
    {"backend", required_argument, 0, O_BACKEND}, {"seqlen", required_argument, 0, 's'},
    {"batch", required_argument, 0, 'B'}, {"heads", required_argument, 0, 'H'},
    {"kv-heads", required_argument, 0, O_KVHEADS}, {"head-dim", required_argument, 0, 'd'},
    {"dtype", required_argument, 0, 't'}, {"budget", required_argument, 0, O_BUDGET},
    {"reps", required_argument, 0, 'r'}, {"threads", required_argument, 0, O_THREADS},
    {"repeat", required_argument, 0, O_REPEAT}, {"db", required_argument, 0, O_DB},
    {"no-store", no_argument, 0, O_NOSTORE}, {"lookup", no_argument, 0, O_LOOKUP}, {"quiet", no_argument, 0, 'q'},
    {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  char *end;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "p:m:s:B:H:d:t:r:qh", opts, NULL)) != -1) {
    switch (c) {
    case 'p': a->pattern = optarg; break;
    case 'm': a->model = optarg; break;
    case O_BACKEND: a->backend = optarg; break;
    case 's':
      if (a->nseq == MAX_SHAPES) {
        fprintf(stderr, "hattn tune: at most %d --seqlen\n", MAX_SHAPES);
        return -1;
      }
      if (tool_parse_pair("--seqlen", optarg, 0, &a->lq[a->nseq], &a->lk[a->nseq])) return -1;
      a->nseq++;
      break;
    case 'B':
      if (a->nbatch == MAX_SHAPES) {
        fprintf(stderr, "hattn tune: at most %d --batch\n", MAX_SHAPES);
        return -1;
      }
      if (tool_parse_len("--batch", optarg, 0, &a->batch[a->nbatch])) return -1;
      a->nbatch++;
      break;
    case 'H': if (tool_parse_len("--heads", optarg, 0, &a->heads)) return -1; break;
    case O_KVHEADS: if (tool_parse_len("--kv-heads", optarg, 0, &a->kv_heads)) return -1; break;
    case 'd': if (tool_parse_len("--head-dim", optarg, 0, &a->head_dim)) return -1; break;
    case 't':
      if (tool_parse_dtype("--dtype", optarg, &a->dtype)) return -1;
      a->have_dtype = 1;
      break;
    case O_BUDGET:
      a->budget = strtod(optarg, &end);
      if (end == optarg || *end || !(a->budget > 0)) {
        fprintf(stderr, "hattn tune: --budget: expected a positive number of seconds, got '%s'\n", optarg);
        return -1;
      }
      break;
    case 'r': if (tool_parse_len("--reps", optarg, 0, &a->reps)) return -1; break;
    case O_THREADS: if (tool_parse_len("--threads", optarg, 0, &a->threads)) return -1; break;
    case O_REPEAT: if (tool_parse_len("--repeat", optarg, 0, &a->repeat)) return -1; break;
    case O_DB: if (tool_parse_db(optarg, &a->db_path)) return -1; break;
    case O_NOSTORE: a->no_store = 1; break;
    case O_LOOKUP: a->lookup = 1; break;
    case 'q': a->quiet = 1; break;
    case 'h': fputs(tune_usage, stdout); return 1;
    default: fputs(tune_usage, stderr); return -1;
    }
  }
  if (optind != argc - 1) {
    fprintf(stderr, "hattn tune: expected one spec FILE\n\n%s", tune_usage);
    return -1;
  }
  a->file = argv[optind];
  if (a->nseq == 0) {
    fprintf(stderr, "hattn tune: --seqlen is required\n\n%s", tune_usage);
    return -1;
  }
  if (a->pattern && a->model) {
    fprintf(stderr, "hattn tune: give --pattern or --model, not both\n");
    return -1;
  }
  return 0;
}

static void print_result(const hattn__tune_problem *p, const hattn__tune_result *r, double budget) {
  int i;
  printf("  %-2s  %-40s %-16s %12s %12s %5s %10s\n", "#", "config", "status", "median us", "spread us", "reps",
         "gate err");
  for (i = 0; i < r->ncands; i++) {
    const hattn__tune_cand *c = &r->cands[i];
    if (c->status == HATTN__CAND_TIMED)
      printf("  %-2d  %-40s %-16s %12.1f %12.1f %5d %10.2g%s\n", i + 1, c->config, "ok", c->median_us, c->spread_us,
             c->reps, c->gate_err, i == r->winner ? "  <- winner" : i == r->fastest ? "  (fastest)" : "");
    else
      printf("  %-2d  %-40s %-16s %s\n", i + 1, c->config, hattn__cand_status_name(c->status), c->why);
  }
  if (r->winner >= 0) {
    const hattn__tune_cand *w = &r->cands[r->winner], *f = &r->cands[r->fastest];
    printf("winner: %s: %.1f us (spread %.1f us)", w->config, w->median_us, w->spread_us);
    if (r->fastest != r->winner)
      printf("; the fastest, %s at %.1f us, is within the spread", f->config, f->median_us);
    printf("\n");
  }
  printf("tuned in %.1f s (budget %.0f s)%s\n", r->elapsed_s, budget,
         r->budget_hit ? "; the budget ran out, candidates were skipped" : "");
  (void)p;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Ask the kernel cache for P's kernel (a cache of its own, as a fresh
** process has) and print where it came from and the time from opening the
** cache to holding a runnable kernel. */
static int lookup_one(const tune_args *a, const hattn__backend_i *be, const hattn__tune_problem *p, void *dev) {
  hattn__kcache_opts o;
  hattn__kcache *kc = NULL;
  hattn__kc_kernel *k = NULL;
  char err[4096];
  double t0 = now_ms(), t1;
  int rc;
  memset(&o, 0, sizeof o);
  o.backend = be->id;
  o.db_path = a->db_path;
  o.dev = dev;
  rc = hattn__kcache_open(&o, &kc, err, sizeof err);
  if (rc == HATTN_OK)
    rc = hattn__kcache_get(kc, p->pattern, p->dtype, p->head_dim, p->lq, p->lk, p->batch * p->heads, &k, err,
                           sizeof err);
  t1 = now_ms();
  if (rc != HATTN_OK) {
    fprintf(stderr, "hattn tune: lookup of %s: %s\n", p->pattern->name, err);
    hattn__kcache_close(kc);
    return -1;
  }
  printf("lookup %s %s lk %lld bh %lld: %s %s, config %s%s, %.2f ms from asking to a runnable kernel\n",
         p->pattern->name, be->name, (long long)p->lk, (long long)(p->batch * p->heads),
         hattn__kc_source_name(k->source), k->key, k->config, k->tuned ? " (tuned)" : " (default)", t1 - t0);
  hattn__kcache_close(kc);
  return 0;
}

/* Tune one problem A->repeat times; print, store the first run. */
static int tune_one(const tune_args *a, const hattn__backend_i *be, hattn__tune_problem *p, void *dev,
                    hattn__db *db, int *agree) {
  hattn__tune_result first, again;
  hattn__tune_opts opt;
  char err[4096];
  int rc, k;

  memset(&opt, 0, sizeof opt);
  opt.budget_s = a->budget > 0 ? a->budget : 60;
  opt.reps = (int)a->reps;
  opt.progress = a->quiet ? 2 : -1;
  opt.max_threads = (int)a->threads;
  opt.dev = dev;
  printf("\ntune %s = %s | %s | q %lldx%lldx%lldx%d kv %lldx%lldx%lldx%d %s\n", p->pattern->name,
         p->pattern->canon, be->name, (long long)p->batch, (long long)p->heads,
         (long long)p->lq, p->head_dim, (long long)p->batch, (long long)p->kv_heads, (long long)p->lk, p->head_dim,
         hattn__dtype_name(p->dtype));
  fflush(stdout);
  rc = hattn__tune_run(be->id, p, &opt, &first, err, sizeof err);
  if (first.ncands) {
    printf("device %s | target %s | %s | class %s | bucket lk 2^%d, batch x heads %s\n", first.model, first.target,
           first.compiler, first.kclass, first.lk_log2, hattn__db_bh_class_name(first.bh_class));
    print_result(p, &first, opt.budget_s);
  }
  if (rc != HATTN_OK) {
    fprintf(stderr, "hattn tune: %s: %s\n", p->pattern->name, err);
    hattn__tune_result_clear(&first);
    return -1;
  }
  if (db) {
    if (hattn__tune_store(db, p, &opt, &first, err, sizeof err) != HATTN_OK)
      fprintf(stderr, "hattn tune: warning: the tuning was not stored: %s\n", err);
    else {
      printf("stored in %s: kernel %s (winner %s) and the tuning of class %s for device %s, bucket lk 2^%d / "
             "batch x heads %s; as the database reads it back:\n",
             hattn__db_path(db), first.winner_key, first.cands[first.winner].config, first.kclass, first.model,
             first.lk_log2, hattn__db_bh_class_name(first.bh_class));
      fflush(stdout);
      if (hattn__db_show(db, first.winner_key, stdout, err, sizeof err) != HATTN_OK ||
          hattn__db_show(db, first.kclass, stdout, err, sizeof err) != HATTN_OK)
        fprintf(stderr, "hattn tune: warning: cannot read the record back: %s\n", err);
    }
  }
  for (k = 1; k < a->repeat; k++) {
    int v;
    opt.progress = 2;
    if (hattn__tune_run(be->id, p, &opt, &again, err, sizeof err) != HATTN_OK) {
      fprintf(stderr, "hattn tune: repeat %d: %s\n", k + 1, err);
      agree[HATTN__TUNE_DIFFER]++;
      hattn__tune_result_clear(&again);
      continue;
    }
    v = hattn__tune_agree(&first, &again);
    agree[v]++;
    printf("repeat %d: winner %s at %.1f us (spread %.1f): %s\n", k + 1, again.cands[again.winner].config,
           again.cands[again.winner].median_us, again.cands[again.winner].spread_us,
           v == HATTN__TUNE_SAME ? "same winner" : v == HATTN__TUNE_WITHIN ? "another, within the spread"
                                                                        : "DIFFERENT, outside the spread");
    fflush(stdout);
    hattn__tune_result_clear(&again);
  }
  hattn__tune_result_clear(&first);
  return 0;
}

int hattn__cmd_tune(int argc, char **argv) {
  tune_args a;
  hattn__spec *spec = NULL;
  const hattn__backend_i *be;
  void *dev = NULL;
  hattn__db *db = NULL;
  hattn__tune_problem p;
  const hattn__model *model = NULL;
  char err[4096];
  int rc = TOOL_USAGE, r, i, si, bi, pi, failed = 0, agree[3] = {0, 0, 0};
  int *use = NULL;

  memset(&a, 0, sizeof a);
  r = parse_args(argc, argv, &a);
  if (r != 0) return r > 0 ? TOOL_OK : TOOL_USAGE;
  if ((be = tool_backend("tune", a.backend)) == NULL) return TOOL_USAGE;
  if ((spec = tool_load_spec(a.file)) == NULL) goto done;
  if (a.model) {
    int mi = hattn__spec_find_model(spec, a.model);
    if (mi < 0) {
      fprintf(stderr, "hattn tune: no model '%s' in %s\n", a.model, a.file);
      goto done;
    }
    model = &spec->models[mi];
  } else if (a.pattern == NULL && spec->npatterns != 1) {
    fprintf(stderr, "hattn tune: %s has %d patterns: name one with --pattern or --model\n", a.file, spec->npatterns);
    goto done;
  }
  if ((use = calloc((size_t)spec->npatterns + 1, sizeof *use)) == NULL) goto done;
  if (model) {
    for (i = 0; i < model->layers * model->heads; i++) use[model->assign[i]] = 1;
  } else {
    pi = a.pattern ? hattn__spec_find_pattern(spec, a.pattern) : 0;
    if (pi < 0) {
      fprintf(stderr, "hattn tune: no pattern '%s' in %s\n", a.pattern, a.file);
      goto done;
    }
    use[pi] = 1;
  }
  memset(&p, 0, sizeof p);
  p.nlayouts = spec->nlayouts;
  p.heads = a.heads ? a.heads : model ? model->heads : 8;
  p.kv_heads = a.kv_heads ? a.kv_heads : model && !a.heads ? model->kv_heads : p.heads;
  p.head_dim = (int)(a.head_dim ? a.head_dim : model ? model->head_dim : 128);
  p.dtype = a.have_dtype ? a.dtype : model ? model->dtype : be->dtype_default;
  if (tool_backend_dtype("tune", be, p.dtype)) goto done;
  if (p.kv_heads < 1 || p.heads % p.kv_heads) {
    fprintf(stderr, "hattn tune: --kv-heads %lld must divide --heads %lld\n", (long long)p.kv_heads,
            (long long)p.heads);
    goto done;
  }
  /* Device 0 (the CPU's with a pool of --threads, as the tuner's own). */
  if (be->dev_open(0, (int)a.threads, &dev, err, sizeof err) != HATTN_OK) {
    fprintf(stderr, "hattn tune: %s\n", err);
    goto done;
  }
  if (!a.no_store && !a.lookup && hattn__db_open(a.db_path, 0, &db, err, sizeof err) != HATTN_OK) {
    fprintf(stderr, "hattn tune: warning: %s; the tunings are not stored\n", err);
    db = NULL;
  }
  if (a.nbatch == 0) a.batch[0] = 1, a.nbatch = 1;
  rc = TOOL_OK;
  for (pi = 0; pi < spec->npatterns; pi++) {
    if (!use[pi]) continue;
    for (si = 0; si < a.nseq; si++)
      for (bi = 0; bi < a.nbatch; bi++) {
        p.pattern = &spec->patterns[pi];
        p.lq = a.lq[si], p.lk = a.lk[si], p.batch = a.batch[bi];
        if ((a.lookup ? lookup_one(&a, be, &p, dev) : tune_one(&a, be, &p, dev, db, agree)) != 0) failed++;
      }
  }
  if (a.repeat > 1) {
    int n = agree[0] + agree[1] + agree[2];
    printf("\nrepeat agreement: %d re-tunings against the first run: same winner %d, another within the spread %d, "
           "different %d: %.0f%% agreed or within the spread\n",
           n, agree[0], agree[1], agree[2], n ? 100.0 * (agree[0] + agree[1]) / n : 0.0);
  }
  if (failed) rc = TOOL_FAIL;
done:
  free(use);
  hattn__db_close(db);
  if (dev != NULL) be->dev_close(dev);
  hattn__spec_destroy(spec);
  return rc;
}
