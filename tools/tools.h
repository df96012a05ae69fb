/*
** tools.h: what the subcommands of the hattn command share.  Internal.
*/
#ifndef HATTN_TOOLS_H
#define HATTN_TOOLS_H

#include <stdint.h>
#include <stdio.h>

#include "backend.h"
#include "mask.h"
#include "plan.h"
#include "spec.h"

/* Exit statuses of the command: 0 success, 1 a failed check (verify), 2 a
** usage error or bad input. */
enum { TOOL_OK = 0, TOOL_FAIL = 1, TOOL_USAGE = 2 };

/* Each subcommand: argc/argv start at the subcommand's name. */
int hattn__cmd_check(int argc, char **argv);   /* cmd_check.c */
int hattn__cmd_plan(int argc, char **argv);    /* cmd_plan.c */
int hattn__cmd_report(int argc, char **argv);  /* cmd_report.c */
int hattn__cmd_run(int argc, char **argv);     /* cmd_run.c */
int hattn__cmd_verify(int argc, char **argv);  /* cmd_run.c */
int hattn__cmd_gen(int argc, char **argv);     /* cmd_gen.c */
int hattn__cmd_bench(int argc, char **argv);   /* cmd_bench.c */
int hattn__cmd_db(int argc, char **argv);      /* cmd_db.c */
int hattn__cmd_tune(int argc, char **argv);    /* cmd_tune.c */
int hattn__cmd_loadgen(int argc, char **argv); /* cmd_loadgen.c */

/* The helpers below are shared by several subcommands and live in cli.c,
** except tool_svg_write (svg.c). */

/* Parse "fp32", "fp16" or "bf16" into *OUT.  Prints "hattn: OPTION: ..."
** and returns -1 when it is none of them. */
int tool_parse_dtype(const char *opt, const char *s, hattn__dtype *out);

/* The backend table named NAME (NULL: "cpu").  Prints "hattn CMD:
** --backend: unknown backend ..." and returns NULL when there is none. */
const hattn__backend_i *tool_backend(const char *cmd, const char *name);

/* Whether backend BE runs DTYPE: 0, or prints "hattn CMD: the cuda backend
** runs fp16 and bf16, not fp32 (use --dtype)" and returns -1. */
int tool_backend_dtype(const char *cmd, const hattn__backend_i *be, hattn__dtype dtype);

/* Create the directory DIR and its missing parents.  Returns 0, or prints
** "hattn CMD: ..." and returns -1. */
int tool_make_dir(const char *cmd, const char *dir);

/* The contents of the file PATH (malloc'd, not NUL-terminated) and its
** length in *LEN, or NULL after printing why it could not be read. */
char *tool_read_text(const char *path, size_t *len);

/* Read and parse the spec file PATH.  Prints the spec's diagnostics (or why
** the file could not be read) to stderr and returns NULL on failure. */
hattn__spec *tool_load_spec(const char *path);

/* Parse a length such as "4096", "128k" or "1m" into *OUT (> 0 unless
** ALLOW_ZERO).  Prints "hattn: OPTION: ..." and returns -1 when it is not one. */
int tool_parse_len(const char *opt, const char *s, int allow_zero, int64_t *out);

/* The argument S of --db: 0 with *OUT = S, or -1 (with a message) when S
** is empty, which would name a temporary database that keeps nothing. */
int tool_parse_db(const char *s, const char **out);

/* Parse "A" or "A,B" into *A and *B (B = A when absent). */
int tool_parse_pair(const char *opt, const char *s, int allow_zero, int64_t *a, int64_t *b);

/* The visible pairs of full causal attention at lq x lk, bottom-right aligned. */
int64_t tool_causal_pairs(int64_t lq, int64_t lk);

/* Write N with thousands separators into BUF ("268,435,456"). */
const char *tool_commas(int64_t n, char buf[32]);

/* KEEP[k] = 1 for each key k < N that the query at N - 1, or one of the
** next ones, may see under MASK: the tokens a KV cache must hold to decode
** at length N.  Takes up to N times the mask's period evaluations; the
** most a command lets it take: */
void tool_kept_keys(const hattn__mask *mask, int64_t n, uint8_t *keep);
#define TOOL_MAX_KEEP_STEPS ((int64_t)1 << 28)

/* The most documents --docs may make (docs/spec.md, Limits). */
#define TOOL_MAX_DOCS (1 << 20)

/* Run-time data for plan and report, from --docs, --doc-lens and --layout,
** and stand-in topk tables (the K most recent eligible key blocks). */
typedef struct tool_rtdata {
  int64_t doc_len;             /* --docs: documents of this many tokens */
  const char *doc_lens;        /* --doc-lens: a comma list */
  const char *layout_args[16]; /* --layout NAME=FILE */
  int nlayout_args;
  /* filled by tool_rtdata_env */
  int64_t *offsets;
  hattn__layout *layouts;
  uint8_t **layout_bits;
  int nlayouts;
  int32_t *topk;
} tool_rtdata;

/* Fill ENV for pattern P of SPEC at lq x lk (batch 1, one head) from RT.
** Returns 0, or prints why and returns -1. */
int tool_rtdata_env(tool_rtdata *rt, const hattn__spec *spec, const hattn__pattern *p,
                    int64_t lq, int64_t lk, hattn__mask_env *env);
void tool_rtdata_free(tool_rtdata *rt);

/* Handle --docs, --doc-lens, --layout: returns 1 when OPT was one of them. */
int tool_rtdata_option(tool_rtdata *rt, int opt, const char *arg);

/* Print the layers in SET (N increasing numbers) as ranges: "0-40 step 2, 41". */
void tool_print_layers(FILE *out, const int *set, int n);

/* Print the patterns of one layer of M: "local", or
** "heads 0-3 global, heads 4-15 local". */
void tool_print_layer_heads(FILE *out, const hattn__spec *spec, const hattn__model *m, int layer);

/* XML-escape S into OUT (of N bytes), cut short to fit (svg.c). */
void tool_xml_escape(const char *s, char *out, size_t n);

/* Draw the plan's block classes as an SVG file at PATH; returns 0 or -1. */
int tool_svg_write(const char *path, const hattn__plan *plan, const char *title);

/* hattn report --measure (report_measure.c): attention layers timed on a
** backend's device with the kernels of the runtime's lookup.  Open the
** backend named BACKEND (NULL: cpu) with THREADS (0: all) and the kernel
** database DB (NULL: the default file); 0, or -1 after printing why. */
typedef struct tool_measure tool_measure;
int tool_measure_open(const char *backend, const char *db, int threads, tool_measure **out);
void tool_measure_close(tool_measure *mm);
const char *tool_measure_backend(const tool_measure *mm);
const char *tool_measure_device(const tool_measure *mm);
/* Whether the backend runs model M's dtype: 0, or -1 after printing why not. */
int tool_measure_dtype(const tool_measure *mm, const hattn__model *m);

/* The median time in *MS of one layer of model M whose every head uses
** pattern P of SPEC (run-time data from RT), batch BATCH, LQ queries and LK
** keys (inputs uniform in [-1, 1)); 0, or -1 after printing why. */
int tool_measure_layer(tool_measure *mm, const hattn__spec *spec, const hattn__pattern *p, tool_rtdata *rt,
                       const hattn__model *m, int64_t batch, int64_t lq, int64_t lk, double *ms);

#endif /* HATTN_TOOLS_H */
