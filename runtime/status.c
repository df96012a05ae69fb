/*
** status.c: status codes and version.  See hattn.h.
*/
#include "hattn.h"

const char *hattn_strerror(int status) {
  switch (status) {
  case HATTN_OK: return "success";
#define HATTN__XX(name, val, msg) case HATTN_##name: return msg;
    HATTN_ERR_MAP(HATTN__XX)
#undef HATTN__XX
  default: return "unknown status code";
  }
}

const char *hattn_err_name(int status) {
  switch (status) {
  case HATTN_OK: return "HATTN_OK";
#define HATTN__XX(name, val, msg) case HATTN_##name: return "HATTN_" #name;
    HATTN_ERR_MAP(HATTN__XX)
#undef HATTN__XX
  default: return "HATTN_UNKNOWN";
  }
}

#define STR_(x) #x
#define STR(x) STR_(x)

/* The header's version: configure's PACKAGE_VERSION is checked against it
** by tests/test_api.c. */
const char *hattn_version(void) {
  return STR(HATTN_VERSION_MAJOR) "." STR(HATTN_VERSION_MINOR) "." STR(HATTN_VERSION_PATCH);
}
