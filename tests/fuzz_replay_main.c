/*
** fuzz_replay_main.c: run the fuzz target over files without libFuzzer:
** each file as it is, then every prefix of it and a few hundred copies with
** bytes changed by a fixed generator, so that a machine without clang still
** exercises the parser on broken input.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char alphabet[] = "()&|!,=:{}-#\n 0123456789kmwindowcausalsinkpatternmodellayer";

int main(int argc, char **argv) {
  uint64_t state = 88172645463325252u;
  int i, runs = 0;
  for (i = 1; i < argc; i++) {
    FILE *f = fopen(argv[i], "rb");
    uint8_t *buf, *mut;
    long len;
    int m, j;
    if (f == NULL || fseek(f, 0, SEEK_END) || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
      fprintf(stderr, "fuzz_spec_replay: cannot read %s\n", argv[i]);
      return 1;
    }
    buf = malloc((size_t)len + 1);
    mut = malloc((size_t)len + 1);
    if (!buf || !mut || fread(buf, 1, (size_t)len, f) != (size_t)len) return 1;
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)len);
    for (j = 0; j <= len; j += 1 + len / 64) LLVMFuzzerTestOneInput(buf, (size_t)j), runs++;
    for (m = 0; m < 300 && len > 0; m++, runs++) {
      int edits = 1 + m % 4, e;
      memcpy(mut, buf, (size_t)len);
      for (e = 0; e < edits; e++) {
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        mut[state % (uint64_t)len] = (uint8_t)((state >> 32) % 3 == 0 ? (uint8_t)(state >> 40)
                                               : (uint8_t)alphabet[(state >> 40) % (sizeof alphabet - 1)]);
      }
      LLVMFuzzerTestOneInput(mut, (size_t)len);
    }
    free(buf);
    free(mut);
  }
  printf("fuzz_spec_replay: %d files, %d runs, no failure\n", argc - 1, runs);
  return 0;
}
