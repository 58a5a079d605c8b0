#!/bin/bash
# Every paired comparison in speed/ (`ladir-bench compare`), from the repository root:
#   bash results/countdown3-reference/speed/pairs.sh
set -e
S=results/countdown3-reference/speed; O=results/countdown3-reference/order; P=mdm-arbase-countdown3-seed0.countdown3
V=$P-val.k10; T=$P-test.k100
pair() { ladir-bench compare "$S/$1.metrics.json" --against "$2.metrics.json" --json > "$S/$3.jsonl"; }
# validation: each setting against one token a step in confidence order (order/), then the levers one at a time
for s in cacheprefix_gen_length48_steps16_threshold0.9 cacheprefix_gen_length48_steps48 cacheprefix_gen_length48_steps48_threshold0.9 \
         gen_length48_steps48_threshold0.9; do
  pair "${V}_$s" "$O/${V}_gen_length48_steps48" "val-$s-against-one-token-a-step"
done
pair "${V}_block_length24_gen_length48_steps48_threshold0.9" "$S/${V}_gen_length48_steps48_threshold0.9" val-blocks-of-24-against-one-block
pair "${V}_block_length24_cachedual_gen_length48_refreshlast_block_steps48_threshold0.9" \
     "$S/${V}_block_length24_cacheprefix_gen_length48_steps48_threshold0.9" val-dual-cache-against-prefix-cache
pair "${V}_cacheprefix_gen_length48_steps16" "$S/${V}_cacheprefix_gen_length48_steps16_threshold0.9" val-3-a-step-against-threshold
pair "${V}_cacheprefix_gen_length48_steps48_threshold0.7" "$S/${V}_cacheprefix_gen_length48_steps48_threshold0.9" val-threshold0.7-against-0.9
# dKV-Cache's committed-column cache against the prefix cache, each at the same steps and threshold
for s in steps16_threshold0.9 steps48; do
  pair "${V}_cachecommitted_gen_length48_$s" "$S/${V}_cacheprefix_gen_length48_$s" "val-committed-cache-against-prefix-cache-$s"
done
# the test protocol: the chosen setting against one token a step, the cached blocks (bases/) and AR-SFT's seed 0
F="${T}_cacheprefix_gen_length48_steps16_threshold0.9"
pair "$F" "$O/${T}_gen_length48_steps48" test-prefix-threshold-against-one-token-a-step
pair "$F" "results/countdown3-reference/bases/${T}_block_length24_cachedual_refreshlast_block_threshold0.9" test-prefix-threshold-against-cached-blocks
pair "$F" results/countdown3-reference/evaluations/ar-sft-countdown3-seed0-53ee81f0fe.countdown3-test.k100 test-prefix-threshold-against-ar-sft
pair "${T}_cacheprefix_gen_length48_steps48" "$O/${T}_gen_length48_steps48" test-prefix-cache-one-token-a-step-against-uncached
# the committed-column cache on the test protocol: against the prefix cache (same steps, threshold) and AR-SFT
C="${T}_cachecommitted_gen_length48_steps16_threshold0.9"
pair "$C" "$F" test-committed-cache-against-prefix-cache
pair "$C" results/countdown3-reference/evaluations/ar-sft-countdown3-seed0-53ee81f0fe.countdown3-test.k100 \
     test-committed-cache-against-ar-sft
# AR-SFT's seed 0 trained again (retrained-ar-sft/) against its committed evaluation
R=ar-sft-countdown3-seed0-53ee81f0fe.countdown3-test.k100
ladir-bench compare "$S/retrained-ar-sft/$R.metrics.json" --against "results/countdown3-reference/evaluations/$R.metrics.json" \
    --json > "$S/retrained-ar-sft/retrained-against-committed.jsonl"
