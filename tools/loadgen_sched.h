/*
** loadgen_sched.h: the scheduler of hattn loadgen.  Continuous batching
** with chunked prefill over a paged KV pool of a fixed number of pages,
** on a clock that the caller advances.  It knows no device and no kernel:
** the caller runs each step's batch and says when the step ended, so that
** tests drive it on a fake clock.  Internal to the hattn command.
**
** Requests arrive at their arrival times and wait in a queue (first come,
** first served).  The head of the queue is admitted when a slot is free
** and the pool can hold the most pages it will ever need (its reservation:
** worst case over its whole life, so no request is ever preempted or runs
** out of pages); otherwise it and everything behind it wait.  A request too
** large for the whole pool is refused when the run starts.
**
** Each step: every request that has its prompt behind it decodes one token
** (one query against its keys), then requests still in their prompt get
** chunks of it, in admission order, while the step's token budget lasts.
** The step that ends a prompt yields the first output token; each decode
** step one more; a request is done with its OUTPUT-th token, and its pages
** and slot are freed at once.
**
** Pages: every layer has its own row of a block table per slot, listing
** the page of each PAGE_SIZE keys (column c holds keys c*P .. c*P+P-1), all
** layers drawing from one pool.  A layer keeps the columns of the keys that
** the current query or a later one can see (hattn report's kept keys): the
** first SINK keys and the last WINDOW ones, or every key (window < 0).
** Before a step the columns its new keys need are allocated (for a chunk,
** the keys its own queries see, which may be more than the layer keeps
** after it); after it the columns no key of the new length needs are
** freed.  Freed columns keep their stale page number in the table: a
** kernel whose mask hides those keys may still read the page, never its
** values into a result.
*/
#ifndef HATTN_LOADGEN_SCHED_H
#define HATTN_LOADGEN_SCHED_H

#include <stdint.h>

/* One request: its arrival and lengths (the caller's), and what happened
** to it (the scheduler's; negative until it happens). */
typedef struct loadgen_request {
  double arrival;              /* seconds from the start */
  int64_t prompt, output;      /* tokens, >= 1 each */
  double admitted;             /* when it got its slot and reservation */
  double first_token;          /* end of the step that ended its prompt */
  double finished;             /* end of the step of its last token */
  int refused;                 /* nonzero: larger than the pool (never run) */
} loadgen_request;

/* How a layer keeps its keys: the first SINK and the last WINDOW; WINDOW
** below 0: every key. */
typedef struct loadgen_keep {
  int64_t sink, window;
} loadgen_keep;

typedef struct loadgen_config {
  int max_batch;               /* slots: requests running at once, >= 1 */
  int64_t max_tokens;          /* tokens a step, decodes and chunks, >= 1 */
  int64_t chunk;               /* the most prompt tokens of one request a step, >= 1 */
  int64_t page_size;           /* keys a page, >= 1 */
  int64_t pool_pages;          /* pages of the pool, >= 1 */
  int nlayers;                 /* >= 1 */
  const loadgen_keep *keep;    /* [nlayers], copied */
} loadgen_config;

/* One batch entry of a step: request REQ in slot SLOT runs Q_LEN queries
** (1 for a decode) whose keys end at K_LEN (its length after the step). */
typedef struct loadgen_entry {
  int req, slot;
  int64_t q_len, k_len;
} loadgen_entry;

/* A step's batch, owned by the scheduler, valid until the next call. */
typedef struct loadgen_step {
  const loadgen_entry *decode; /* q_len 1 each, in admission order */
  int ndecode;
  const loadgen_entry *prefill;/* chunks, in admission order */
  int nprefill;
  int64_t tokens;              /* queries of the step: ndecode + chunks */
} loadgen_step;

typedef struct loadgen_sched loadgen_sched;

/*
** A scheduler for CFG over the N requests REQS (the caller's array, sorted
** by arrival, kept and written by the scheduler until it is destroyed).
** Requests larger than the pool are marked refused.  Returns 0, or -1
** with a sentence in ERR (a bad configuration, unsorted arrivals, lengths
** below 1, out of memory).
*/
int loadgen_sched_create(const loadgen_config *cfg, loadgen_request *reqs, int n, loadgen_sched **out, char *err,
                         size_t errlen);
void loadgen_sched_destroy(loadgen_sched *s);

/* The longest sequence a request of the run reaches (prompt + output), and
** the block tables' width: columns per row, ceil(longest / page_size). */
int64_t loadgen_sched_max_len(const loadgen_sched *s);
int64_t loadgen_sched_table_cols(const loadgen_sched *s);

/*
** Start a step at time NOW: queue the arrivals up to NOW, admit what fits,
** build the batch in *STEP and allocate its pages.  *STEP has no entries
** when nothing runs; then *NEXT is the time of the next arrival, or a
** negative number when every request is done or refused.
*/
void loadgen_sched_begin(loadgen_sched *s, double now, loadgen_step *step, double *next);

/* End the step started last at time NOW (>= its start): record the tokens
** it yielded, free the pages no key needs any more, retire the requests
** that are done. */
void loadgen_sched_end(loadgen_sched *s, double now);

/* Layer L's block table: [max_batch][table_cols] int32, row = slot.  The
** rows written since the last loadgen_sched_take_dirty are LO .. HI
** (LO > HI: none); taking them resets the range. */
const int32_t *loadgen_sched_table(const loadgen_sched *s, int layer);
void loadgen_sched_take_dirty(loadgen_sched *s, int layer, int *lo, int *hi);

/* What the pool holds now. */
typedef struct loadgen_usage {
  int64_t pages_used;          /* pages in the tables */
  int64_t pages_reserved;      /* the admitted requests' reservations */
  int64_t slots_kept;          /* key slots of the used pages that hold kept keys */
  int running, queued;         /* requests admitted and not done; arrived and waiting */
  int done, refused;           /* requests finished; refused */
} loadgen_usage;
void loadgen_sched_usage(const loadgen_sched *s, loadgen_usage *u);

/* The pages one request of LEN tokens may hold at once in a layer keeping
** KEEP, with steps of at most CHUNK new keys: its reservation there. */
int64_t loadgen_reserve_pages(loadgen_keep keep, int64_t len, int64_t chunk, int64_t page_size);

#endif /* HATTN_LOADGEN_SCHED_H */
