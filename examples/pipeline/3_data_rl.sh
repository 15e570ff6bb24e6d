#!/usr/bin/env bash
# Stage 3: RL questions in verl's parquet format -> $WORK/data_rl/{train,test}.parquet.
source "$(dirname "$0")/common.sh"
done_or_continue "$WORK/data_rl/.done"
"$RFTT" data rl --source "$RL_SOURCE" --test-size "$RL_TEST_SIZE" --out "$WORK/data_rl" $RL_DATA_ARGS
mark_done "$WORK/data_rl/.done"
