#!/usr/bin/env bash
# Deleting documents from a base datastore (docs/PERFORMANCE.md, "Deleting documents from the base datastore").
# Builds a 1,000,000-entry IVF1024,PQ32 datastore of the default model from GCIDE + FOLDOC train cut into
# documents of about 1,000 characters, its centroids trained on a separate text (--train-text: the start of
# FOLDOC valid + GCIDE valid, never stored), then measures: single-document deletes, one batch of 1,000
# documents, the files' apparent and allocated sizes before and after, the resident memory of kNN-LM scoring
# before and after, and verify-deleted. A second, 200,000-entry datastore trained on all of its entries
# (pool "all") measures what a forced --retrain costs.
# Usage: bench/datastore-documents.sh [ENTRIES]   (default 1000000; SKIP_BUILD=1 reuses the datastores)
set -euo pipefail
cd "$(dirname "$0")/.."
mnemo=build/mnemo
model=data/models/default
out=data/bench-documents
entries=${1:-1000000}
mkdir -p $out
python3 - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
text = open("data/corpus/gcide/train.txt").read() + open("data/corpus/foldoc/train.txt").read()
docs, cur, n = [], [], 0
for line in text.split("\n"):
    cur.append(line)
    n += len(line) + 1
    if n >= 1000:
        docs.append("\n".join(cur)); cur, n = [], 0
if cur: docs.append("\n".join(cur))
with open(out + "/documents.jsonl", "w") as f:
    for i, d in enumerate(docs):
        f.write(json.dumps({"text": d, "id": "doc-%06d" % i, "metadata": {"chars": len(d)}}) + "\n")
train = open("data/corpus/foldoc/valid.txt").read() + open("data/corpus/gcide/valid.txt").read()
open(out + "/train.txt", "w").write(train)
EOF
ds=$out/ds-$entries
rss() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1"; }
sizes() { echo "$1: apparent $(du -s --apparent-size -k "$2" | cut -f1) KB, allocated $(du -s -k "$2" | cut -f1) KB," \
  "index.faiss $(stat -c %s "$2/index.faiss") B, documents.jsonl $(stat -c %s "$2/documents.jsonl") B"; }
if [[ -z "${SKIP_BUILD:-}" ]]; then
  rm -rf "$ds" "$ds.orig"
  /usr/bin/time -v $mnemo datastore build --model $model --documents $out/documents.jsonl --train-text $out/train.txt \
    --out "$ds" --index IVF1024,PQ32 --max-entries "$entries" --quiet --json > $out/build.json 2> $out/build.time
  cp -r "$ds" "$ds.orig"
else
  rm -rf "$ds" && cp -r "$ds.orig" "$ds"
fi
echo "build: $(cat $out/build.json)"
head -c 30000 data/corpus/gcide/valid.txt > $out/valid-30k.txt
sizes before "$ds"
/usr/bin/time -v $mnemo eval ppl --model $model --text-file $out/valid-30k.txt --datastore "$ds" --mmap-index \
  --k 1024 --nprobe 8 --json > $out/ppl-before.json 2> $out/ppl-before.time
echo "kNN-LM scoring before: $(cat $out/ppl-before.json | head -c 300) peak RSS $(rss $out/ppl-before.time) KB"
# The documents the build used (with --max-entries, the first ones), and the ids to delete: every 2nd of them.
python3 - "$ds" "$out" <<'EOF'
import json, sys
ds, out = sys.argv[1], sys.argv[2]
live = [json.loads(l)["id"] for l in list(open(ds + "/documents.jsonl"))[1:]]
picked = live[::2]
open(out + "/single.txt", "w").write("\n".join(picked[:5]) + "\n")
open(out + "/batch.txt", "w").write("\n".join(picked[5:1005]) + "\n")
open(out + "/first-deleted.txt", "w").write(picked[0])
print("documents: %d, deleting 5 one by one then a batch of %d" % (len(live), len(picked[5:1005])))
EOF
while read -r id; do
  $mnemo datastore rm --datastore "$ds" --document "$id" --quiet --json
done < $out/single.txt
/usr/bin/time -v $mnemo datastore rm --datastore "$ds" --ids-file $out/batch.txt --quiet --json 2> $out/batch.time
echo "batch of 1,000: peak RSS $(rss $out/batch.time) KB"
sizes after "$ds"
/usr/bin/time -v $mnemo eval ppl --model $model --text-file $out/valid-30k.txt --datastore "$ds" --mmap-index \
  --k 1024 --nprobe 8 --json > $out/ppl-after.json 2> $out/ppl-after.time
echo "kNN-LM scoring after: $(cat $out/ppl-after.json | head -c 300) peak RSS $(rss $out/ppl-after.time) KB"
first=$(cat $out/first-deleted.txt)
python3 -c "
import json,sys
for l in open('$out/documents.jsonl'):
    d=json.loads(l)
    if d['id']=='$first': open('$out/first-deleted-text.txt','w').write(d['text'])"
/usr/bin/time -f "verify-deleted with the text: %e s" $mnemo datastore verify-deleted --datastore "$ds" \
  --document "$first" --model $model --text-file $out/first-deleted-text.txt
# What a forced --retrain costs: a 200,000-entry datastore trained on all of its entries (pool "all").
small=$out/ds-all-200000
if [[ -z "${SKIP_BUILD:-}" ]]; then
  rm -rf "$small" "$small.orig"
  $mnemo datastore build --model $model --documents $out/documents.jsonl --out "$small" --index IVF1024,PQ32 \
    --max-entries 200000 --quiet --json > $out/build-all.json
  cp -r "$small" "$small.orig"
else
  rm -rf "$small" && cp -r "$small.orig" "$small"
fi
echo "build (pool all, 200,000 entries): $(cat $out/build-all.json)"
$mnemo datastore rm --datastore "$small" --document doc-000001 --quiet --json || echo "(refused without --retrain, as it should be)"
$mnemo datastore rm --datastore "$small" --document doc-000001 --retrain --quiet --json
