/*
** npy.h: NumPy .npy files (format version 1.0 written; 1.0 and 2.0 read),
** little-endian, C order, rank 0 to 4.  What hattn run and verify use to
** hand tensors to other tools.  Internal to the hattn command.
**
** Element types are the four that hattn needs: '<f4' (float32), '<f2'
** (IEEE half), '<u2' (bfloat16, stored as its 16-bit words, since NumPy has
** no bfloat16 dtype) and '<f8' (float64).
*/
#ifndef HATTN_TOOLS_NPY_H
#define HATTN_TOOLS_NPY_H

#include <stddef.h>
#include <stdint.h>

#define TOOL_NPY_MAX_RANK 4

typedef enum tool_npy_type {
  TOOL_NPY_F4 = 0,   /* '<f4' */
  TOOL_NPY_F2,       /* '<f2' */
  TOOL_NPY_U2,       /* '<u2': bf16 words */
  TOOL_NPY_F8        /* '<f8' */
} tool_npy_type;

/* An array in memory: DATA holds prod(shape) elements of TYPE in C order,
** in the host's byte order.  It is malloc'd; tool_npy_free frees it. */
typedef struct tool_npy {
  tool_npy_type type;
  int rank;                            /* 0 .. TOOL_NPY_MAX_RANK */
  int64_t shape[TOOL_NPY_MAX_RANK];
  void *data;
  size_t nbytes;
} tool_npy;

/* The descr text of TYPE ("<f4") and the size of one element in bytes. */
const char *tool_npy_descr(tool_npy_type type);
int tool_npy_size(tool_npy_type type);

/*
** Write RANK dimensions SHAPE of TYPE from DATA (host byte order, C order)
** to PATH as a version 1.0 file.  Returns 0, or writes one sentence naming
** PATH into ERR and returns -1 (the file may then be left incomplete).
*/
int tool_npy_write(const char *path, tool_npy_type type, int rank, const int64_t *shape,
                   const void *data, char *err, size_t errlen);

/*
** Read PATH into *OUT.  The reader is strict: it accepts only the magic
** string, versions 1.0 and 2.0, a header dict with exactly the keys descr,
** fortran_order (False) and shape (rank <= 4), one of the four descrs, and
** exactly prod(shape) elements of data after the header.  Returns 0, or
** writes one sentence naming PATH into ERR, leaves *OUT empty and returns -1.
*/
int tool_npy_read(const char *path, tool_npy *out, char *err, size_t errlen);

/* Free what tool_npy_read put in A (not A itself); zeroes A. */
void tool_npy_free(tool_npy *a);

#endif /* HATTN_TOOLS_NPY_H */
