/*
** cmd_check.c: hattn check FILE: validate a spec and print its canonical
** forms and model assignments.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools.h"

static const char check_usage[] =
  "usage: hattn check FILE\n"
  "\n"
  "Parse and check the spec FILE.  On success print, for every pattern, its\n"
  "canonical form (the text that identifies its kernels) and 64-bit key, and\n"
  "for every model its shape and which pattern each layer and head uses.\n"
  "On errors print one compiler-style message per problem and exit 2.\n";

static int print_model(const hattn__spec *spec, const hattn__model *m) {
  int *done = calloc((size_t)m->layers, sizeof *done), *set = malloc((size_t)m->layers * sizeof *set);
  int l, l2, n;
  if (!done || !set) {
    free(done);
    free(set);
    return -1;
  }
  printf("model %s: %d layers, %d heads, %d kv heads, head_dim %d, %s\n", m->name, m->layers,
         m->heads, m->kv_heads, m->head_dim, hattn__dtype_name(m->dtype));
  /* Group layers whose heads are assigned alike. */
  for (l = 0; l < m->layers; l++) {
    if (done[l]) continue;
    for (n = 0, l2 = l; l2 < m->layers; l2++) {
      if (!done[l2] && !memcmp(m->assign + (size_t)l2 * m->heads, m->assign + (size_t)l * m->heads,
                               (size_t)m->heads * sizeof *m->assign)) {
        done[l2] = 1;
        set[n++] = l2;
      }
    }
    fputs(n == 1 ? "  layer " : "  layers ", stdout);
    tool_print_layers(stdout, set, n);
    fputs(": ", stdout);
    tool_print_layer_heads(stdout, spec, m, l);
    fputc('\n', stdout);
  }
  free(done);
  free(set);
  return 0;
}

int hattn__cmd_check(int argc, char **argv) {
  hattn__spec *spec;
  int i, width = 0;
  if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    fputs(check_usage, stdout);
    return TOOL_OK;
  }
  if (argc != 2 || argv[1][0] == '-') {
    fputs(check_usage, stderr);
    return TOOL_USAGE;
  }
  if ((spec = tool_load_spec(argv[1])) == NULL) return TOOL_USAGE;
  for (i = 0; i < spec->npatterns; i++)
    if ((int)strlen(spec->patterns[i].name) > width) width = (int)strlen(spec->patterns[i].name);
  for (i = 0; i < spec->npatterns; i++) {
    const hattn__pattern *p = &spec->patterns[i];
    printf("pattern %-*s = %s    # key %016llx\n", width, p->name, p->canon, (unsigned long long)p->key);
  }
  for (i = 0; i < spec->nmodels; i++) {
    if (i > 0 || spec->npatterns) fputc('\n', stdout);
    if (print_model(spec, &spec->models[i])) {
      fprintf(stderr, "hattn: out of memory\n");
      hattn__spec_destroy(spec);
      return TOOL_USAGE;
    }
  }
  hattn__spec_destroy(spec);
  return TOOL_OK;
}
