/*
** cmd_gen.c: hattn gen FILE --cpu NAME --out DIR (or --backend cuda --arch
** A,B): write the kernels of a spec's patterns ahead of time through the
** backend table's gen operation (runtime/backend_gen.c), so that a program
** links them and runs them without LLVM or NVRTC.
*/
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "tools.h"

static const char gen_usage[] =
  "usage: hattn gen FILE --cpu NAME --out DIR [options]\n"
  "       hattn gen FILE --backend cuda --arch sm_80,sm_90a [--emit source|cubin] --out DIR\n"
  "\n"
  "Write the CPU kernel of each pattern of the spec FILE (or of --pattern P) as\n"
  "an object file DIR/hattn_cpu_KEY_DTYPE_dHEADDIM.o compiled for the LLVM CPU\n"
  "NAME, and the header DIR/hattn_kernels.h that declares every kernel function\n"
  "(the calling convention of cpu_abi.h) and lists them in the table\n"
  "hattn_gen_kernels[] with the canonical text, key, dtype, head_dim, tile\n"
  "configuration, scale and CPU of each.  A program includes the header, links\n"
  "the objects, and runs them without LLVM.\n"
  "\n"
  "Both backends also write DIR/hattn_prebuilt.c and DIR/hattn_prebuilt.h: the\n"
  "kernels as a table of hattn_prebuilt (cubins embedded as byte arrays) and\n"
  "int NAME_register(hattn_ctx *ctx), which hands the table to hattn_add_prebuilt.\n"
  "Compile the source and link it (with the objects) into a program that links\n"
  "libhattnrt, the runtime without LLVM and NVRTC, or libhattn.\n"
  "\n"
  "With --backend cuda, write each pattern's CUDA kernel for every arch of\n"
  "--arch as readable source (DIR/NAME.cu, --emit source) or as a cubin\n"
  "compiled by NVRTC (DIR/NAME.ARCH.cubin, --emit cubin, the default), NAME\n"
  "being the kernel's entry point: hattn_fwd_KEY_DTYPE_dHEADDIM_CONFIG.\n"
  "\n"
  "options:\n"
  "  -p, --pattern P       only this pattern (default: every pattern of FILE)\n"
  "      --backend B       cpu (the default) or cuda\n"
  "      --arch A,B        cuda: the archs (sm_80, sm_86, sm_90a, ...)\n"
  "      --emit WHAT       cuda: source or cubin (the default)\n"
  "  -c, --cpu NAME        the CPU: x86-64-v3, x86-64-v4, znver1, sapphirerapids, ...\n"
  "      --needs LIST      cpu: the extensions the host must have to run the objects\n"
  "                        (default: those of x86-64-v2/v3/v4; other CPU names are\n"
  "                        checked for their vector level only, with a warning)\n"
  "      --name NAME       the prefix of the registration's C names (default hattn_gen)\n"
  "  -o, --out DIR         the directory to write to (created)\n"
  "  -t, --dtype T         fp32, fp16 or bf16 (default: the dtype the spec's models\n"
  "                        declare, else fp32 on the cpu and bf16 on cuda)\n"
  "  -d, --head-dim D      head dimension (default 128)\n"
  "  -b, --block BM,BN     tile size (default: chosen for head_dim)\n"
  "      --rows R          query rows held in registers (default: chosen)\n"
  "      --vec V           floats per vector, 8 (AVX2) or 16 (AVX-512); default 16\n"
  "                        for the CPUs hattn knows to have AVX-512, else 8\n"
  "  -h, --help            this text\n";

/* Whether NAME is a C identifier of at most 40 characters. */
static int c_ident(const char *name) {
  size_t n = strlen(name);
  return n > 0 && n <= 40 && !(name[0] >= '0' && name[0] <= '9') &&
         strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == n;
}

/* The dtype the models of SPEC declare: 1 and *OUT when they agree, 0 when
** the spec has no model, -1 (printed) when they disagree. */
static int models_dtype(const hattn__spec *spec, hattn__dtype *out) {
  int i;
  for (i = 1; i < spec->nmodels; i++)
    if (spec->models[i].dtype != spec->models[0].dtype) {
      fprintf(stderr, "hattn gen: models '%s' and '%s' declare dtypes %s and %s: give --dtype\n",
              spec->models[0].name, spec->models[i].name, hattn__dtype_name(spec->models[0].dtype),
              hattn__dtype_name(spec->models[i].dtype));
      return -1;
    }
  if (spec->nmodels == 0) return 0;
  *out = spec->models[0].dtype;
  return 1;
}

int hattn__cmd_gen(int argc, char **argv) {
  enum { O_BACKEND = 256, O_ROWS, O_VEC, O_ARCH, O_EMIT, O_NEEDS, O_NAME };
  static const struct option opts[] = {
    {"pattern", required_argument, 0, 'p'}, {"backend", required_argument, 0, O_BACKEND},
    {"cpu", required_argument, 0, 'c'},     {"out", required_argument, 0, 'o'},
    {"dtype", required_argument, 0, 't'},   {"head-dim", required_argument, 0, 'd'},
    {"block", required_argument, 0, 'b'},   {"rows", required_argument, 0, O_ROWS},
    {"vec", required_argument, 0, O_VEC},   {"help", no_argument, 0, 'h'},
    {"arch", required_argument, 0, O_ARCH}, {"emit", required_argument, 0, O_EMIT},
    {"needs", required_argument, 0, O_NEEDS}, {"name", required_argument, 0, O_NAME},
    {0, 0, 0, 0}};
  /* TARGETS[0]: --cpu, TARGETS[1]: --arch; the backend says which it takes. */
  const char *backend = NULL, *targets[2] = {NULL, NULL}, *target_opts[2] = {"--cpu", "--arch"};
  const hattn__backend_i *be = NULL;
  hattn__gen_opts o;
  hattn__spec *spec = NULL;
  int64_t hd = 128, bm = 0, bn = 0, rows = 0, vec = 0;
  int c, rc = TOOL_USAGE, dtype_given = 0, t;
  char err[16384];

  memset(&o, 0, sizeof o);
  o.name = "hattn_gen";
  optind = 1;
  while ((c = getopt_long(argc, argv, "p:c:o:t:d:b:h", opts, NULL)) != -1) {
    switch (c) {
    case 'p': o.pattern = optarg; break;
    case O_BACKEND: backend = optarg; break;
    case 'c': targets[0] = optarg; break;
    case 'o': o.dir = optarg; break;
    case 't': if (tool_parse_dtype("--dtype", optarg, &o.dtype)) goto done; dtype_given = 1; break;
    case O_ARCH: targets[1] = optarg; break;
    case O_EMIT: o.emit = optarg; break;
    case O_NEEDS: o.needs = optarg; break;
    case O_NAME: o.name = optarg; break;
    case 'd': if (tool_parse_len("--head-dim", optarg, 0, &hd)) goto done; break;
    case 'b': if (tool_parse_pair("--block", optarg, 0, &bm, &bn)) goto done; break;
    case O_ROWS: if (tool_parse_len("--rows", optarg, 0, &rows)) goto done; break;
    case O_VEC: if (tool_parse_len("--vec", optarg, 0, &vec)) goto done; break;
    case 'h': fputs(gen_usage, stdout); rc = TOOL_OK; goto done;
    default: fputs(gen_usage, stderr); goto done;
    }
  }
  if (!c_ident(o.name)) {
    fprintf(stderr, "hattn gen: --name: expected a C identifier of at most 40 characters, got '%s'\n", o.name);
    goto done;
  }
  if (o.needs && (strlen(o.needs) > 400 ||
                  strspn(o.needs, "abcdefghijklmnopqrstuvwxyz0123456789.,-") != strlen(o.needs))) {
    fprintf(stderr, "hattn gen: --needs: expected extensions as LLVM names them, comma separated "
                    "(avx2,fma,avx512f)\n");
    goto done;
  }
  if ((be = tool_backend("gen", backend)) == NULL) goto done;
  for (t = 0; t < 2; t++)
    if (!strcmp(target_opts[t], be->gen_target_option)) o.targets = targets[t];
  if (optind != argc - 1 || o.targets == NULL || o.dir == NULL) {
    fprintf(stderr, "hattn gen: ");
    if (optind != argc - 1) fprintf(stderr, "expected one spec FILE");
    else if (o.targets == NULL)
      fprintf(stderr, "%s is required%s%s", be->gen_target_option, backend ? " with --backend " : "",
              backend ? backend : "");
    else fprintf(stderr, "--out is required");
    fprintf(stderr, "\n\n%s", gen_usage);
    goto done;
  }
  if (hd > 1024) {
    fprintf(stderr, "hattn gen: --head-dim %lld is above the limit of 1024\n", (long long)hd);
    goto done;
  }
  if ((spec = tool_load_spec(argv[optind])) == NULL) goto done;
  if (o.pattern && hattn__spec_find_pattern(spec, o.pattern) < 0) {
    fprintf(stderr, "hattn gen: no pattern '%s' in %s\n", o.pattern, argv[optind]);
    goto done;
  }
  /* The dtype: --dtype, else the models', else the backend's. */
  if (!dtype_given) {
    int r = models_dtype(spec, &o.dtype);
    if (r < 0) goto done;
    if (r == 0) o.dtype = be->dtype_default;
  }
  if (tool_backend_dtype("gen", be, o.dtype)) goto done;
  if (be->gen == NULL) {
    fprintf(stderr, "hattn gen: this hattn writes no %s kernels ahead of time\n", be->name);
    goto done;
  }
  if (tool_make_dir("gen", o.dir)) goto done;
  o.head_dim = (int)hd;
  o.tile.bm = (int)bm, o.tile.bn = (int)bn, o.tile.rows = (int)rows, o.tile.vec = (int)vec;
  o.listing = stdout;
  if (be->gen(spec, &o, err, sizeof err) != HATTN_OK) {
    fprintf(stderr, "hattn gen: %s\n", err);
    goto done;
  }
  if (o.warning[0]) fprintf(stderr, "hattn gen: warning: %s\n", o.warning);
  rc = TOOL_OK;
done:
  hattn__spec_destroy(spec);
  return rc;
}
