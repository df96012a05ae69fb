/*
** backend.c: the registry of backend tables (backend.h).
*/
#include <pthread.h>

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
