#!/bin/sh
# The hattn command end to end: check, plan and report on the bundled
# examples, with exact numbers where they have a closed form, and every
# failure path with its exit status and message.
set -u
. "${top_srcdir:-.}/tests/cli-lib.sh"

# Every example checks, and every subcommand has --help.
for f in "$ex"/*.hattn; do expect 0 "pattern" "$hattn" check "$f"; done
expect 0 "usage: hattn COMMAND" "$hattn" --help
for c in check plan report run verify gen bench db tune; do expect 0 "usage: hattn $c" "$hattn" "$c" --help; done
expect 2 "unknown command 'frobnicate'" "$hattn" frobnicate

# check: canonical forms, keys and model assignments.
expect 0 "pattern local  = window(4k) with softcap(50)" "$hattn" check "$ex/gemma2_9b.hattn"
expect 0 "layers 1-41 step 2: global" "$hattn" check "$ex/gemma2_9b.hattn"
expect 0 "layers 5-59 step 6: global" "$hattn" check "$ex/gemma3_27b.hattn"
expect 0 "layers 0-1: retrieval" "$hattn" check "$ex/duoattention_llama3_8b.hattn"
expect 0 "heads 0-3 streaming, heads 4-7 retrieval, heads 8-31 streaming" "$hattn" check "$ex/duoattention_llama3_8b.hattn"

# check: errors in compiler form, exit status 2.
printf 'pattern local = causal & window(0)\n' >"$tmp/bad.hattn"
expect 2 "$tmp/bad.hattn:1:33: error: window size must be positive, got 0" "$hattn" check "$tmp/bad.hattn"
expect 2 "                                  ^" "$hattn" check "$tmp/bad.hattn"
expect 2 "cannot open $tmp/none.hattn" "$hattn" check "$tmp/none.hattn"
expect 2 "usage: hattn check" "$hattn" check

# plan: window(4096) at 16k sees sum(min(q + 1, 4096)) = 58,722,304 pairs.
expect 0 "pairs    58,722,304 visible of 268,435,456" "$hattn" plan "$ex/mistral_7b.hattn" --seqlen 16k
expect 0 "blocks   FULL " "$hattn" plan "$ex/mistral_7b.hattn" --seqlen 16k --block 128,64
expect 0 "svg      $tmp/m.svg" "$hattn" plan "$ex/mistral_7b.hattn" --seqlen 4k --svg "$tmp/m.svg"
grep -q "<svg" "$tmp/m.svg" || { echo "FAIL: no <svg> in $tmp/m.svg"; fails=$((fails + 1)); }
expect 0 "pairs    " "$hattn" plan "$ex/packed_documents.hattn" --seqlen 16k --docs 1k
expect 0 "pairs    1,049,600 visible" "$hattn" plan "$ex/packed_documents.hattn" --seqlen 2k --doc-lens 1k
expect 0 "pattern bigbird = " "$hattn" plan "$ex/bigbird.hattn" --seqlen 4k
expect 2 "has 2 patterns: name one with --pattern" "$hattn" plan "$ex/gemma2_9b.hattn" --seqlen 4k
expect 2 "no pattern 'nope'" "$hattn" plan "$ex/gemma2_9b.hattn" --pattern nope --seqlen 4k
expect 2 "--seqlen is required" "$hattn" plan "$ex/mistral_7b.hattn"
expect 2 "--seqlen: expected a positive length" "$hattn" plan "$ex/mistral_7b.hattn" --seqlen 0
expect 2 "--seqlen: expected a positive length" "$hattn" plan "$ex/mistral_7b.hattn" --seqlen 3g
expect 2 "--block: expected a positive length" "$hattn" plan "$ex/mistral_7b.hattn" --seqlen 4k --block 0
printf 'pattern sparse = blocks(lay) & causal\n' >"$tmp/blocks.hattn"
expect 2 "uses blocks(lay): give its layout with --layout lay=FILE" "$hattn" plan "$tmp/blocks.hattn" --seqlen 256
printf '64 64\n1000\n1100\n0110\n1011\n' >"$tmp/lay.txt"
expect 0 "pairs    " "$hattn" plan "$tmp/blocks.hattn" --seqlen 256 --layout "lay=$tmp/lay.txt"
printf '64\n' >"$tmp/badlay.txt"
expect 2 "expected the block size" "$hattn" plan "$tmp/blocks.hattn" --seqlen 256 --layout "lay=$tmp/badlay.txt"

# report: Gemma 3 keeps 1024 tokens in local layers and everything in the
# ten global ones: 16 kv heads * 2 * 128 * 2 bytes per token.
expect 0 "model gemma3_27b: 62 layers" "$hattn" report "$ex/gemma3_27b.hattn" --seqlen 128k
expect 0 "the same model with full causal attention in every layer" "$hattn" report "$ex/gemma3_27b.hattn" --seqlen 128k
"$hattn" report "$ex/gemma3_27b.hattn" --seqlen 128k >"$tmp/r" 2>&1
kv_total=$(awk '/^total/ {print $4}' "$tmp/r")
kv_causal=$(awk '/^causal/ {print $4}' "$tmp/r")
[ "$kv_total" = "10656.00" ] && [ "$kv_causal" = "63488.00" ] ||
  { echo "FAIL: gemma3 KV MiB total '$kv_total' (10656.00) causal '$kv_causal' (63488.00)"; fails=$((fails + 1)); }
expect 0 "   0.778%        2.190         8.00  local" "$hattn" report "$ex/gemma3_27b.hattn" --seqlen 128k
expect 0 "model streaming_llama2_7b" "$hattn" report "$ex/streamingllm.hattn" --seqlen 32k
expect 2 "has no model block" "$hattn" report "$ex/packed_documents.hattn" --seqlen 4k
expect 2 "no model 'nope'" "$hattn" report "$ex/gemma3_27b.hattn" --model nope --seqlen 4k

# db: the kernel database's command.
expect 0 "usage: hattn db" "$hattn" db --help
expect 2 "unknown" "$hattn" db frobnicate --db "$tmp/k.db"
head -c 4096 /dev/urandom >"$tmp/junk.db"
expect 1 "$tmp/junk.db" "$hattn" db list --db "$tmp/junk.db"

echo "cli.sh: $fails failure(s)"
[ "$fails" -eq 0 ]
