#!/bin/sh
# Stands in for every script examples/02-nightly.yaml names (each /opt/batch/NAME.sh is a link
# to this file): it says which step it is, where it runs and with what.
echo "$(basename "$0" .sh) on $(hostname): job ${JOBNET_JOB_PATH:-?} attempt ${JOBNET_ATTEMPT:-?}, args: $*"
