/*
** main.c: the hattn command: dispatch to subcommands (cmd_*.c); the
** helpers they share are in cli.c (tools.h).
*/
#include <stdio.h>
#include <string.h>

#include "hattn.h"
#include "tools.h"

static const char usage[] =
  "usage: hattn COMMAND [OPTIONS] FILE\n"
  "\n"
  "Generate, inspect and measure attention kernels for the hybrid and sparse\n"
  "patterns of a spec file (docs/spec.md).\n"
  "\n"
  "commands:\n"
  "  check FILE     validate a spec; print every pattern's canonical form and key\n"
  "                 and every model's layer assignment\n"
  "  plan FILE      lower one pattern to blocks: FULL / PARTIAL / EMPTY counts,\n"
  "                 density, FLOPs against dense causal, and an SVG of the mask\n"
  "  report FILE    for a model: per layer the patterns, density, attention FLOPs\n"
  "                 and KV-cache bytes, with totals against full causal attention\n"
  "  run FILE       run one pattern's kernel on random inputs (or --in DIR) and\n"
  "                 write q, k, v, o and lse as .npy files (--out DIR); with\n"
  "                 --page-size P, K and V are read from a shuffled page pool;\n"
  "                 with --kv-lens A,B,.. (and --q-lens) a variable-length batch\n"
  "  verify FILE    run, then compare with the float64 reference: exit 0 within\n"
  "                 the dtype's tolerance, 1 outside it\n"
  "  gen FILE       write object files and a header of kernels for a named CPU,\n"
  "                 for programs that run them without LLVM\n"
  "  bench          GFLOP/s of the CPU kernels beside a plain loop nest and the\n"
  "                 BLAS path, as a fraction of the CPU's FMA peak\n"
  "  db ACTION      the kernel database: list, show KEY, export FILE, import FILE,\n"
  "                 prune, verify\n"
  "  loadgen FILE   serve a stream of requests with a model's attention layers and\n"
  "                 with causal ones: throughput, latency and KV-pool use under load\n"
  "  tune FILE      tune a pattern's (or a model's) kernels for problem shapes on\n"
  "                 the CPU or GPU 0 and store the winners in the database\n"
  "\n"
  "Run 'hattn COMMAND --help' for a command's options.\n"
  "  --version      print the version\n";

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage, stderr);
    return TOOL_USAGE;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    fputs(usage, stdout);
    return TOOL_OK;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("hattn %s\n", hattn_version());
    return TOOL_OK;
  }
  if (!strcmp(argv[1], "check")) return hattn__cmd_check(argc - 1, argv + 1);
  if (!strcmp(argv[1], "plan")) return hattn__cmd_plan(argc - 1, argv + 1);
  if (!strcmp(argv[1], "report")) return hattn__cmd_report(argc - 1, argv + 1);
  if (!strcmp(argv[1], "run")) return hattn__cmd_run(argc - 1, argv + 1);
  if (!strcmp(argv[1], "bench")) return hattn__cmd_bench(argc - 1, argv + 1);
  if (!strcmp(argv[1], "verify")) return hattn__cmd_verify(argc - 1, argv + 1);
  if (!strcmp(argv[1], "gen")) return hattn__cmd_gen(argc - 1, argv + 1);
  if (!strcmp(argv[1], "db")) return hattn__cmd_db(argc - 1, argv + 1);
  if (!strcmp(argv[1], "loadgen")) return hattn__cmd_loadgen(argc - 1, argv + 1);
  if (!strcmp(argv[1], "tune")) return hattn__cmd_tune(argc - 1, argv + 1);
  fprintf(stderr, "hattn: unknown command '%s'\n\n%s", argv[1], usage);
  return TOOL_USAGE;
}
