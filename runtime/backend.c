/*
** backend.c: the registry of backend tables (backend.h).
*/
#include <pthread.h>
#include <string.h>

#include "backend.h"

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

const hattn__backend_i *hattn__backend_get(int id) {
  pthread_once(&g_once, hattn__backend_register_compilers);
  switch (id) {
  case HATTN_BACKEND_CPU: return &hattn__backend_cpu;
  case HATTN_BACKEND_CUDA: return &hattn__backend_cuda;
  }
  return NULL;
}

const char *hattn__backend_name(hattn__backend b) { return b == HATTN__BACKEND_CUDA ? "cuda" : "cpu"; }

const hattn__backend_i *hattn__backend_at(int i) {
  static const int ids[] = {HATTN_BACKEND_CPU, HATTN_BACKEND_CUDA};
  return i >= 0 && i < (int)(sizeof ids / sizeof ids[0]) ? hattn__backend_get(ids[i]) : NULL;
}

const hattn__backend_i *hattn__backend_find(const char *name, const char **names) {
  const hattn__backend_i *be, *found = NULL;
  int i;
  if (names) *names = "cpu or cuda";
  for (i = 0; (be = hattn__backend_at(i)) != NULL && found == NULL; i++)
    if (strcmp(be->name, name) == 0) found = be;
  return found;
}
