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

const char *hattn_version(void) { return PACKAGE_VERSION; }
