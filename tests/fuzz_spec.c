/*
** fuzz_spec.c: the parser's fuzz target.  Any bytes go in; the parser must
** not crash, and what it accepts must hold three properties, or the target
** aborts:
**   1. the canonical text of a pattern parses back to itself (same key);
**   2. the block plan of every pattern is safe against brute force on a
**      small problem (no visible pair in an EMPTY block, no masked pair in
**      a FULL one);
**   3. every visible pair lies inside the pattern's closed-form key ranges.
** Built with libFuzzer (tests/fuzz-brief.sh), and replayed over a corpus by
** a plain driver (fuzz_replay_main.c) on every machine.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hattn.h"
#include "mask.h"
#include "plan.h"
#include "spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const hattn__pattern *p) {
  fprintf(stderr, "fuzz_spec: %s: pattern '%s' = %s\n", what, p->name, p->canon);
  abort();
}

/* Property 1: the canonical text is a fixed point of parse-and-canonicalise. */
static void check_canon_roundtrip(const hattn__pattern *p) {
  char *text = malloc(strlen(p->canon) + 32);
  hattn__spec *again = NULL;
  if (text == NULL) return;
  sprintf(text, "pattern x = %s\n", p->canon);
  if (hattn__spec_parse(text, strlen(text), "canon", &again, NULL) != HATTN_OK)
    fail("canonical text does not parse", p);
  if (strcmp(again->patterns[0].canon, p->canon) || again->patterns[0].key != p->key)
    fail("canonical text is not a fixed point", p);
  hattn__spec_destroy(again);
  free(text);
}

/* Properties 2 and 3 on one small problem, for masks without layouts or
** routing (documents get fixed offsets). */
static void check_plan(const hattn__pattern *p, uint32_t h) {
  int64_t lq = 1 + h % 67, lk = 1 + (h >> 8) % 71, bm = 1 + (h >> 16) % 19, bn = 1 + (h >> 24) % 23;
  int64_t offsets[8] = {0, 0, 5, 6, 20, 33, 40, 0}, q, k, i, n;
  hattn__mask_env env;
  hattn__plan *plan = NULL;
  hattn__krange r[HATTN_MAX_KRANGES];
  char err[256];
  if (p->needs & (HATTN_NEEDS_BLOCKS | HATTN_NEEDS_TOPK)) return;
  memset(&env, 0, sizeof env);
  env.lq = lq;
  env.lk = lk;
  env.batch = env.heads = 1;
  for (n = 1; n < 7 && offsets[n] < lk; n++) {}
  offsets[n] = lk;
  env.doc_offsets = offsets;
  env.ndocs = n;
  if (hattn__plan_build(p->lowered, &env, bm, bn, &plan, err, sizeof err) != HATTN_OK)
    fail("plan_build failed", p);
  for (q = 0; q < lq; q++) {
    int64_t qb = q / bm, qpos = q + lk - lq;
    int nr = hattn__key_ranges(p->lowered, qpos, qpos + 1, lk, r);
    for (k = 0; k < lk; k++) {
      int vis = hattn__mask_visible(p->lowered, q, k, 0, &env), cls = HATTN_BLOCK_EMPTY;
      int64_t kb = k / bn, inside = 0;
      for (i = plan->full_off[0][qb]; i < plan->full_off[0][qb + 1]; i++)
        if (plan->full_idx[0][i] == kb) cls = HATTN_BLOCK_FULL;
      for (i = plan->partial_off[0][qb]; i < plan->partial_off[0][qb + 1]; i++)
        if (plan->partial_idx[0][i] == kb) cls = HATTN_BLOCK_PARTIAL;
      if (vis && cls == HATTN_BLOCK_EMPTY) fail("visible pair in an EMPTY block", p);
      if (!vis && cls == HATTN_BLOCK_FULL) fail("masked pair in a FULL block", p);
      for (i = 0; i < nr; i++) inside |= r[i].lo <= k && k < r[i].hi;
      if (vis && !inside) fail("visible pair outside the key ranges", p);
    }
  }
  hattn__plan_destroy(plan);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hattn__spec *spec = NULL;
  hattn__diags diags = {0};
  uint32_t h = 2166136261u;
  size_t i;
  int rc = hattn__spec_parse((const char *)data, size, "fuzz.hattn", &spec, &diags);
  if (rc == HATTN_ESPEC && (diags.count == 0 || diags.text == NULL)) {
    fprintf(stderr, "fuzz_spec: a rejected spec without a diagnostic\n");
    abort();
  }
  for (i = 0; i < size; i++) h = (h ^ data[i]) * 16777619u;
  for (i = 0; spec && i < (size_t)spec->npatterns && i < 4; i++) {
    check_canon_roundtrip(&spec->patterns[i]);
    check_plan(&spec->patterns[i], h + (uint32_t)i * 2654435761u);
  }
  hattn__spec_destroy(spec);
  hattn__diags_clear(&diags);
  return 0;
}
