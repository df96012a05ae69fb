/*
** db.h: the kernel database, an SQLite file that keeps compiled kernels and
** tuning records between runs (schema: db/schema.sql).  Internal; not
** installed.
**
** The file is $HATTN_DB, else $XDG_CACHE_HOME/hattn/hattn.db, else
** ~/.cache/hattn/hattn.db.  It runs in WAL mode with a busy timeout, and
** every write is one IMMEDIATE transaction, so several processes may tune
** into one file at once.  The database is a cache: when it cannot be opened
** (corrupt, truncated, written by a newer hattn, an unwritable directory)
** hattn__db_open returns HATTN_EDB with a sentence that names the file, and
** the caller warns and goes on without it.
**
** Stored binaries are code that hattn runs, so the database trusts none it
** did not store itself for this user: each carries an HMAC-SHA-256 under
** the user's key (hattn__db_key), and a binary without a valid one is
** treated as absent, so that the caller compiles it again.  A database file
** or directory that other users can write is refused.  Exports carry tuning
** records and unauthenticated binaries; an import takes the records, and
** the binaries only when asked to (HATTN__DB_IMPORT_BINARIES).
**
** Every function returns HATTN_OK or a negative HATTN_E* code and, on
** failure, writes a sentence into ERR (ERRLEN bytes, may be 0).  A handle
** is used by one thread at a time.
*/
#ifndef HATTN_DB_H
#define HATTN_DB_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The schema version this hattn writes (PRAGMA user_version). */
#define HATTN__DB_SCHEMA_VERSION 2

/* The bytes of the user's key that authenticates stored binaries. */
#define HATTN__DB_KEY_LEN 32

/* The format version of export files. */
#define HATTN__DB_EXPORT_VERSION 1

/* The busy timeout of every connection, in milliseconds. */
#define HATTN__DB_BUSY_MS 10000

typedef struct hattn__db hattn__db;

/* Flags of hattn__db_open. */
enum {
  HATTN__DB_READONLY = 1  /* open read-only: lookups work, writes fail */
};

/* The default path: $HATTN_DB when set and not empty, else
** $XDG_CACHE_HOME/hattn/hattn.db when XDG_CACHE_HOME is an absolute path,
** else $HOME/.cache/hattn/hattn.db.  Returns HATTN_OK, or HATTN_EINVAL when
** none of them is set or the path does not fit in BUF. */
int hattn__db_default_path(char *buf, size_t len, char *err, size_t errlen);

/* Open the database at PATH (NULL: hattn__db_default_path), creating the
** file and its missing directories (mode 0700), and bring its schema up to
** HATTN__DB_SCHEMA_VERSION.  A file that this process may not write (or
** FLAGS with HATTN__DB_READONLY) is opened read-only; hattn__db_readonly
** then says so.  Returns HATTN_OK with *OUT set, or HATTN_EDB with a
** sentence naming the file when it is not a database, is corrupt or
** truncated, was written by a newer hattn ("... was written by a newer hattn
** (schema version N, this hattn knows up to M)"), cannot be created, is a
** directory, is another program's SQLite file (one that is neither empty
** nor hattn's: nothing in it is changed), or can be written by another
** user, or lies in a directory that another user can write;
** HATTN_EINVAL when PATH is "" (a temporary database would keep nothing).
** *OUT is then NULL. */
int hattn__db_open(const char *path, int flags, hattn__db **out, char *err, size_t errlen);

/* Close DB; NULL is fine. */
void hattn__db_close(hattn__db *db);

/* The file DB reads, and whether it is open read-only. */
const char *hattn__db_path(const hattn__db *db);
int hattn__db_readonly(const hattn__db *db);

/* Set the busy timeout of DB to MS milliseconds (default HATTN__DB_BUSY_MS).
** A write that finds the file busy waits this long, six times in all,
** before it fails with HATTN_EDB. */
void hattn__db_busy_timeout(hattn__db *db, int ms);

/* ---- checksums and the key ------------------------------------------------- */

/* The SHA-256 of N bytes at DATA as 64 lower-case hex digits and a NUL. */
void hattn__db_sha256_hex(const void *data, size_t n, char out[65]);

/* The HMAC-SHA-256 (RFC 2104) of N bytes at DATA under KEYLEN bytes of KEY,
** as 64 hex digits and a NUL. */
void hattn__db_hmac_sha256_hex(const void *key, size_t keylen, const void *data, size_t n, char out[65]);

/* The path of the user's key: $HATTN_CONFIG_DIR/db.key when HATTN_CONFIG_DIR
** is set and not empty, else $XDG_CONFIG_HOME/hattn/db.key when
** XDG_CONFIG_HOME is an absolute path, else $HOME/.config/hattn/db.key.
** HATTN_OK, or HATTN_EINVAL when none is set or the path does not fit. */
int hattn__db_key_path(char *buf, size_t len, char *err, size_t errlen);

/* Read the user's key (HATTN__DB_KEY_LEN bytes) into KEY, creating it from
** /dev/urandom, mode 0600, with its directory (0700), when it does not
** exist.  HATTN_EDB with a sentence naming the file when the key, or its
** directory, can be read or written by another user, is not a regular
** file of this user or has the wrong length: nothing is then trusted. */
int hattn__db_key(unsigned char key[HATTN__DB_KEY_LEN], char *err, size_t errlen);

/* ---- shape buckets --------------------------------------------------------- */

/* The shape bucket of a problem with LK keys and BH = batch * heads: *LK_LOG2
** is the smallest n with 2^n >= LK (0 for LK <= 1), *BH_CLASS is 0 for BH
** <= 1, 1 for 2-8, 2 for 9-32, 3 for 33-128 and 4 above 128.  Tuning records
** are kept per bucket. */
void hattn__db_bucket(int64_t lk, int64_t bh, int *lk_log2, int *bh_class);

/* The text of a batch*heads class ("2-8"): a static string. */
const char *hattn__db_bh_class_name(int bh_class);

/* ---- devices ---------------------------------------------------------------- */

/* A device as the tuner saw it.  Strings are never NULL ("" when unknown). */
typedef struct hattn__db_device {
  const char *kind;      /* "gpu" or "cpu" */
  const char *name;      /* GPU name or CPU model name */
  int cc;                /* compute capability (90 for 9.0); 0 on a CPU */
  int sm_count;          /* multiprocessors; 0 on a CPU */
  const char *driver;    /* CUDA driver version; "" on a CPU */
  const char *toolkit;   /* CUDA toolkit version; "" on a CPU */
  const char *features;  /* CPU features, comma separated; "" on a GPU */
  int cores;             /* CPU cores; 0 on a GPU */
} hattn__db_device;

/* The model string of DEV: "gpu:NAME:sm_CC:SMS" or
** "cpu:NAME:FEATURES:CORES".  Machines with the same model share tuning
** records; driver and toolkit are not part of it (the compiler identity is
** kept with every record instead).  Returns the length it needs, as
** snprintf does. */
int hattn__db_device_model(const hattn__db_device *dev, char *buf, size_t len);

/* The models of every device DB records, in order: *MODELS is a
** NULL-terminated malloc'd array of malloc'd strings (free each, then the
** array), *N their count (may be NULL). */
int hattn__db_device_models(hattn__db *db, char ***models, int *n, char *err, size_t errlen);

/* Insert DEV, or update the row of its model (driver, toolkit, last seen). */
int hattn__db_device_put(hattn__db *db, const hattn__db_device *dev, char *err, size_t errlen);

/* ---- kernels ---------------------------------------------------------------- */

/* A compiled kernel.  KEY identifies it, its configuration included;
** COMPILER is the identity of what built it ("llvm 16.0.6", "nvrtc 12.4");
** CHECKSUM is the SHA-256 of BINARY in hex.  Its HMAC covers every field
** but CHECKSUM and CREATED.  In a record from hattn__db_kernel_get every
** pointer points into the same allocation. */
typedef struct hattn__db_kernel {
  const char *key;
  const char *canon;     /* canonical pattern text */
  const char *backend;   /* "cuda" or "cpu" */
  const char *target;    /* "sm_90a", or a CPU name and features */
  const char *config;    /* tile configuration, as text */
  const char *compiler;
  const void *binary;
  size_t size;
  char checksum[65];
  int64_t created;       /* Unix seconds */
  const char *kernel_class;  /* the kernel key without its configuration ("" if unknown) */
  const char *dtype;     /* "fp32", "fp16", "bf16" ("" if unknown) */
  int head_dim;          /* 0 if unknown */
} hattn__db_kernel;

/* Why hattn__db_kernel_get found no usable kernel. */
enum hattn__db_miss {
  HATTN__DB_MISS_NONE = 0,
  HATTN__DB_MISS_ABSENT,    /* no kernel with that key */
  HATTN__DB_MISS_COMPILER,  /* built by another compiler */
  HATTN__DB_MISS_CHECKSUM,  /* the binary does not match its checksum */
  HATTN__DB_MISS_HMAC       /* no valid HMAC under the user's key, or no key */
};

/* Store K (checksum, HMAC and, when K->created is 0, the time are filled
** in here), replacing any kernel with the same key.  HATTN_EDB when the
** user's key cannot be had (hattn__db_key's sentence). */
int hattn__db_kernel_put(hattn__db *db, const hattn__db_kernel *k, char *err, size_t errlen);

/* Look up the kernel KEY built by COMPILER (NULL: by any).  Returns HATTN_OK with *OUT (one
** malloc'd block; the caller frees it with free()), or HATTN_ENOENT with
** *MISS (may be NULL) and a sentence in ERR when there is none, it was
** built by another compiler, its binary fails its checksum or has no valid
** HMAC under the user's key: the caller rebuilds and puts it.  HATTN_EDB
** when the database fails. */
int hattn__db_kernel_get(hattn__db *db, const char *key, const char *compiler,
                         hattn__db_kernel **out, int *miss, char *err, size_t errlen);

/* ---- tuning records ------------------------------------------------------------ */

/* One configuration the tuner timed. */
typedef struct hattn__db_candidate {
  const char *config;
  double time_us;        /* median, microseconds */
  double spread_us;      /* interquartile range, microseconds */
} hattn__db_candidate;

/* A tuning run.  In a record from hattn__db_tuning_get every pointer points
** into the same allocation. */
typedef struct hattn__db_tuning {
  const char *device_model;  /* set by hattn__db_tuning_get; ignored by put */
  const char *kernel_class;  /* the kernel key without its configuration */
  const char *compiler;
  int lk_log2, bh_class;     /* the bucket (hattn__db_bucket) */
  const char *winner;        /* the configuration that won */
  double winner_us;          /* its median time */
  int64_t created;           /* Unix seconds; 0 in put: now */
  int ncandidates;
  const hattn__db_candidate *candidates;  /* every configuration timed */
} hattn__db_tuning;

/* Record T, tuned on DEV (inserted or updated as by hattn__db_device_put),
** with all its candidates, in one transaction. */
int hattn__db_tuning_put(hattn__db *db, const hattn__db_device *dev, const hattn__db_tuning *t,
                         char *err, size_t errlen);

/* The newest tuning of KERNEL_CLASS by COMPILER (NULL: any) on device MODEL for the
** bucket of LK and BH; when that bucket was never tuned, the nearest one:
** the nearest batch*heads class first, then the nearest key length (the
** longer on a tie).  The record's lk_log2 and bh_class say which it is.
** Returns HATTN_OK with *OUT (one malloc'd block; free() it), or
** HATTN_ENOENT when nothing was tuned for that class, or HATTN_EDB. */
int hattn__db_tuning_get(hattn__db *db, const char *model, const char *kernel_class,
                         const char *compiler, int64_t lk, int64_t bh,
                         hattn__db_tuning **out, char *err, size_t errlen);

/* ---- maintenance (hattn db) -------------------------------------------------- */

/* Print the devices, the kernels and the tunings of DB to OUT, one line
** each. */
int hattn__db_list(hattn__db *db, FILE *out, char *err, size_t errlen);

/* Print the kernel KEY and every tuning of the kernel class KEY, with all
** their candidates, to OUT.  HATTN_ENOENT when there is neither. */
int hattn__db_show(hattn__db *db, const char *key, FILE *out, char *err, size_t errlen);

/* Delete kernels and tunings created more than OLDER_THAN_DAYS days ago
** (< 0: none for age), and, when COMPILERS (a NULL-terminated list) is not
** NULL, those of every other compiler; then devices left without tunings.
** *NKERNELS and *NTUNINGS (may be NULL) count what went. */
int hattn__db_prune(hattn__db *db, double older_than_days, const char *const *compilers,
                    int64_t *nkernels, int64_t *ntunings, char *err, size_t errlen);

/* Check the file's integrity (PRAGMA quick_check) and every binary against
** its checksum and its HMAC, printing a line to OUT (may be NULL) for each
** problem.
** *NBAD counts the problems; the return is HATTN_OK unless the check itself
** failed. */
int hattn__db_verify(hattn__db *db, FILE *out, int64_t *nbad, char *err, size_t errlen);

/* Write the tuning records of device MODEL (NULL: every device) and every
** kernel whose binary passes its checksum and HMAC, both limited to
** COMPILER (NULL: every compiler), to PATH, replacing it.  The binaries go
** without HMAC: whoever imports them decides to trust them.  The file is an SQLite database
** with application_id "hatx", the tables of schema.sql and a table export
** naming the format version (HATTN__DB_EXPORT_VERSION) and the hattn that
** wrote it.  *NTUNINGS and *NKERNELS (may be NULL) count what was written.
** HATTN_EDB when the user's key cannot be had. */
int hattn__db_export(hattn__db *db, const char *path, const char *model, const char *compiler,
                     int64_t *ntunings, int64_t *nkernels, char *err, size_t errlen);

/* Flags of hattn__db_import. */
enum {
  HATTN__DB_IMPORT_BINARIES = 1  /* take the file's binaries too, and sign them with the user's key */
};

/* Add the records of the export file PATH to DB, in one transaction: its
** devices and tuning records, and with HATTN__DB_IMPORT_BINARIES in FLAGS
** its kernels (whose binaries then carry the user's HMAC, as if compiled
** here); without it the kernels the records name are compiled here when
** first used.  The whole file is refused, with HATTN_EDB and a sentence,
** when it is not an export file or comes from a newer hattn, when it holds
** a device whose model is not in MODELS, a record (of what is imported)
** whose compiler is not in COMPILERS (both NULL-terminated lists; NULL: no
** check), or an imported binary that fails its checksum.  Tunings already
** present are not added twice; kernels replace those with the same key. */
int hattn__db_import(hattn__db *db, const char *path, int flags, const char *const *models,
                     const char *const *compilers, int64_t *ntunings, int64_t *nkernels,
                     char *err, size_t errlen);

#endif /* HATTN_DB_H */
