/*
** hattn.h: the public interface of hattn, a generator of attention kernels
** for sparse and hybrid attention patterns.  What is not in this file is not
** API.
**
** Every function returns an int: 0 (HATTN_OK) on success, a negative
** HATTN_E* code on failure.  Results come back through out-parameters.
*/
#ifndef HATTN_H
#define HATTN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(HATTN_BUILDING) && defined(__GNUC__)
#define HATTN_API __attribute__((visibility("default")))
#else
#define HATTN_API
#endif

/* The status codes: XX(NAME, value, message).  HATTN_OK is 0. */
#define HATTN_ERR_MAP(XX)                                                    \
  XX(EINVAL,   -1, "invalid argument")                                      \
  XX(ENOMEM,   -2, "out of memory")                                         \
  XX(ESPEC,    -3, "the spec has errors")                                   \
  XX(ENOENT,   -4, "no such pattern, model or file")                        \
  XX(EIO,      -5, "input/output error")                                    \
  XX(ESHAPE,   -6, "bad problem shape")                                     \
  XX(EINPUT,   -7, "bad or missing run-time input")                         \
  XX(ENOTSUP,  -8, "not supported")                                         \
  XX(ENODEV,   -9, "no device")                                             \
  XX(ECOMPILE, -10, "kernel compilation failed")                            \
  XX(EDB,      -11, "kernel database error")

enum hattn_status {
  HATTN_OK = 0,
#define HATTN__XX(name, val, msg) HATTN_##name = (val),
  HATTN_ERR_MAP(HATTN__XX)
#undef HATTN__XX
};

/* The message of a status code: a static string, never NULL. */
HATTN_API const char *hattn_strerror(int status);

/* The name of a status code ("HATTN_ESPEC"): a static string, never NULL. */
HATTN_API const char *hattn_err_name(int status);

/* The library's version, "MAJOR.MINOR.PATCH": a static string. */
HATTN_API const char *hattn_version(void);

#ifdef __cplusplus
}
#endif
#endif /* HATTN_H */
