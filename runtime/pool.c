/*
** pool.c: a fixed pool of worker threads that share one list of work items
** through an atomic counter, or the same list on the tasks of a caller's
** pool (hattn_threadpool).  See cpu.h.
*/
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "hattn.h"
#include "cpu.h"

struct hattn__pool {
  int nthreads;                   /* workers + the calling thread, or the caller's pool's */
  const hattn_threadpool *tp;     /* the caller's pool (its copy), or NULL: ours */
  hattn_threadpool tp_copy;
  pthread_t *threads;
  pthread_mutex_t lock;
  pthread_cond_t wake, done;
  /* The current job, valid while busy > 0. */
  uint64_t generation;            /* bumped for every job */
  int busy;                       /* workers still inside the job */
  int quit;
  int64_t n;
  const int64_t *order;
  void (*fn)(void *ctx, int64_t item, int thread);
  void *ctx;
  atomic_int_fast64_t next;       /* next index of order to take */
};

/* Take items until none are left. */
static void drain(hattn__pool *p, int thread) {
  int64_t i;
  while ((i = atomic_fetch_add(&p->next, 1)) < p->n) p->fn(p->ctx, p->order ? p->order[i] : i, thread);
}

typedef struct worker_arg {
  hattn__pool *pool;
  int thread;
} worker_arg;

static void *worker(void *arg) {
  worker_arg *w = arg;
  hattn__pool *p = w->pool;
  int thread = w->thread;
  uint64_t seen = 0;
  free(w);
  pthread_mutex_lock(&p->lock);
  for (;;) {
    while (!p->quit && p->generation == seen) pthread_cond_wait(&p->wake, &p->lock);
    if (p->quit) break;
    seen = p->generation;
    pthread_mutex_unlock(&p->lock);
    drain(p, thread);
    pthread_mutex_lock(&p->lock);
    if (--p->busy == 0) pthread_cond_signal(&p->done);
  }
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

static int default_threads(void) {
  const char *s = getenv("HATTN_NUM_THREADS");
  long n;
  if (s && *s) {
    char *end;
    n = strtol(s, &end, 10);
    if (*end == '\0' && n >= 1 && n <= 1024) return (int)n;
  }
  n = sysconf(_SC_NPROCESSORS_ONLN);
  return n >= 1 ? (int)(n > 1024 ? 1024 : n) : 1;
}

int hattn__pool_create(int nthreads, hattn__pool **out) {
  hattn__pool *p = calloc(1, sizeof *p);
  int i;
  *out = NULL;
  if (p == NULL) return HATTN_ENOMEM;
  p->nthreads = nthreads > 0 ? nthreads : default_threads();
  if ((p->threads = calloc((size_t)p->nthreads, sizeof *p->threads)) == NULL) goto fail_threads;
  if (pthread_mutex_init(&p->lock, NULL)) goto fail_lock;
  if (pthread_cond_init(&p->wake, NULL)) goto fail_wake;
  if (pthread_cond_init(&p->done, NULL)) goto fail_done;
  atomic_init(&p->next, 0);
  for (i = 1; i < p->nthreads; i++) {
    worker_arg *w = malloc(sizeof *w);
    if (w == NULL) goto fail_workers;
    w->pool = p;
    w->thread = i;
    if (pthread_create(&p->threads[i], NULL, worker, w)) {
      free(w);
      goto fail_workers;
    }
  }
  *out = p;
  return HATTN_OK;

fail_workers:
  p->nthreads = i; /* workers 1 .. i-1 exist */
  hattn__pool_destroy(p);
  return HATTN_ENOMEM;
fail_done:
  pthread_cond_destroy(&p->wake);
fail_wake:
  pthread_mutex_destroy(&p->lock);
fail_lock:
  free(p->threads);
fail_threads:
  free(p);
  return HATTN_ENOMEM;
}

int hattn__pool_create_foreign(const hattn_threadpool *tp, hattn__pool **out) {
  hattn__pool *p;
  int n;
  *out = NULL;
  if (tp == NULL || tp->num_threads == NULL || tp->parallel_for == NULL) return HATTN_EINVAL;
  if ((n = tp->num_threads(tp->user)) < 1) return HATTN_EINVAL;
  if ((p = calloc(1, sizeof *p)) == NULL) return HATTN_ENOMEM;
  p->nthreads = n;
  p->tp_copy = *tp;
  p->tp = &p->tp_copy;
  *out = p;
  return HATTN_OK;
}

/* A task of the caller's pool: drain the job as thread I. */
static void foreign_task(void *arg, int i) {
  hattn__pool *p = arg;
  if (i >= 0 && i < p->nthreads) drain(p, i);
}

void hattn__pool_destroy(hattn__pool *p) {
  int i;
  if (p == NULL) return;
  if (p->tp != NULL) {          /* the caller's threads: nothing of ours to stop */
    free(p);
    return;
  }
  pthread_mutex_lock(&p->lock);
  p->quit = 1;
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->lock);
  for (i = 1; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
  pthread_cond_destroy(&p->done);
  pthread_cond_destroy(&p->wake);
  pthread_mutex_destroy(&p->lock);
  free(p->threads);
  free(p);
}

int hattn__pool_threads(const hattn__pool *p) { return p->nthreads; }

void hattn__pool_run(hattn__pool *p, int64_t n, const int64_t *order,
                     void (*fn)(void *ctx, int64_t item, int thread), void *ctx) {
  if (p->tp != NULL) {
    p->n = n;
    p->order = order;
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->next, 0);
    p->tp->parallel_for(p->tp->user, p->nthreads, foreign_task, p);
    return;
  }
  pthread_mutex_lock(&p->lock);
  p->n = n;
  p->order = order;
  p->fn = fn;
  p->ctx = ctx;
  atomic_store(&p->next, 0);
  p->busy = p->nthreads - 1;
  p->generation++;
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->lock);
  drain(p, 0);
  pthread_mutex_lock(&p->lock);
  while (p->busy > 0) pthread_cond_wait(&p->done, &p->lock);
  pthread_mutex_unlock(&p->lock);
}
