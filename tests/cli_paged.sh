#!/bin/sh
# cli_paged.sh: hattn run and verify with --page-size (filled in by the next commit).
exit 77
