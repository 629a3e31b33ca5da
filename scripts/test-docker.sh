#!/usr/bin/env bash
# Build the Docker image and run the user story (preprocess -> train -> sample -> serve) through a
# mounted folder, then check on the host that every output exists and belongs to the caller.
#
# Works on a machine without Docker Hub: when the base image cannot be pulled, it builds a
# stand-in python:3.11 base with debootstrap (CI-only steps, kept out of the Dockerfile).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DOCKER=/usr/bin/docker
IMAGE=charrnn:test
BASE=${BASE_IMAGE:-python:3.11-slim}
WORK=$(mktemp -d)
DOCKERD_PID=
say() { printf '== %s\n' "$*"; }

cleanup() {
    rm -rf "$WORK" "$ROOT"/docker/wheels/torch-*.whl
    if [ -n "$DOCKERD_PID" ]; then kill "$DOCKERD_PID" 2>/dev/null || true; wait "$DOCKERD_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

if [ ! -x "$DOCKER" ] || ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    say "installing docker.io and debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi
if ! "$DOCKER" info >/dev/null 2>&1; then
    say "starting dockerd"
    dockerd >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
    "$DOCKER" info >/dev/null 2>&1 || { cat "$WORK/dockerd.log"; exit 1; }
fi

if ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1 && ! "$DOCKER" pull -q "$BASE" >/dev/null 2>&1; then
    BASE=local/python:3.11
    if ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
        say "no Docker Hub: building a stand-in $BASE with debootstrap"
        MIRROR=$(grep -h -m1 -oE "https?://[^ ]+/debian/?$" /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -1 || true)
        MIRROR=${MIRROR:-http://deb.debian.org/debian}
        ROOTFS="$WORK/rootfs"
        debootstrap --variant=minbase --include=ca-certificates,python3,python3-venv,python3-pip bookworm "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
            || { tail -20 "$WORK/debootstrap.log"; exit 1; }
        ln -sf python3 "$ROOTFS/usr/bin/python"
        rm -f "$ROOTFS"/usr/lib/python3.*/EXTERNALLY-MANAGED
        cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/" 2>/dev/null || true
        chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1 || true
        tar -C "$ROOTFS" -c . | "$DOCKER" import -c 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' - "$BASE" >/dev/null
    fi
fi

# PyTorch's wheel index may be out of reach: use the CPU wheel pip finds on this machine, if any
WHEEL=$(ls /opt/wheels/torch-*+cpu-cp311-*.whl 2>/dev/null | head -1 || true)
mkdir -p docker/wheels
if [ -n "$WHEEL" ]; then ln -f "$WHEEL" docker/wheels/ 2>/dev/null || cp "$WHEEL" docker/wheels/; fi

say "building $IMAGE on $BASE"
DOCKER_BUILDKIT=1 "$DOCKER" build -q --build-arg BASE_IMAGE="$BASE" -t "$IMAGE" . >/dev/null

say "the sampling kernels were compiled at build time: a container loads them and compiles nothing"
"$DOCKER" run --rm --entrypoint python "$IMAGE" -c '
import glob, os
from charrnn.sampling.warm import warm_up
files = lambda: {p: os.stat(p).st_mtime_ns for p in glob.glob(os.environ["NUMBA_CACHE_DIR"] + "/*/*")}
before = files()
assert before and warm_up() == "numba"
assert files() == before, "the container compiled kernels: the cache built into the image missed"
print(f"loaded {len(before)} cached files")'

DATA="$WORK/data"
mkdir -p "$DATA"
python3 - "$DATA/speeches.txt" <<'PY'
import random, sys
rng = random.Random(0)
words = "we will make this country great again and the people know it believe me tremendous".split()
with open(sys.argv[1], "w") as f:
    for _ in range(3000):
        f.write(" ".join(rng.choice(words) for _ in range(rng.randint(5, 12))).capitalize() + ".\n")
PY
RUN=("$DOCKER" run --rm --user "$(id -u):$(id -g)" -v "$DATA:/data" "$IMAGE")
say "preprocess";  "${RUN[@]}" preprocess --input-txt /data/speeches.txt
say "train";       "${RUN[@]}" train --gpu -1 --seq-length 50 --input-h5 /data/speeches.h5 --input-json /data/speeches.json \
                       --checkpoint-name /data/cv/checkpoint --max-iters 5 --rnn-size 32 --print-every 1
say "sample";      "${RUN[@]}" sample --temperature 0.9 --checkpoint /data/cv --length 200 -o /data/sample.txt

say "Ctrl-C in a container saves a checkpoint"
NAME=charrnn-sigint-$$
"$DOCKER" run -d --name "$NAME" --user "$(id -u):$(id -g)" -v "$DATA:/data" "$IMAGE" train --gpu -1 \
    --input-h5 /data/speeches.h5 --input-json /data/speeches.json --checkpoint-name /data/cv/interrupted \
    --max-iters 100000 --checkpoint-every 0 --rnn-size 32 --print-every 1 >/dev/null
for _ in $(seq 120); do "$DOCKER" logs "$NAME" 2>&1 | grep -q "^Epoch" && break; sleep 0.5; done
"$DOCKER" kill --signal INT "$NAME" >/dev/null
CODE=$("$DOCKER" wait "$NAME")
LOGS=$("$DOCKER" logs "$NAME" 2>&1)
"$DOCKER" rm "$NAME" >/dev/null
[ "$CODE" = 130 ] || { echo "expected exit 130 after SIGINT, got $CODE"; echo "$LOGS" | tail -5; exit 1; }
echo "$LOGS" | grep -q "resume with: charrnn train --resume /data/cv/interrupted_" || { echo "$LOGS" | tail -5; exit 1; }
ls "$DATA"/cv/interrupted_*.pt >/dev/null

say "serve: the README's docker run, then a completion over the published port and a clean stop"
NAME=charrnn-serve-$$
"$DOCKER" run -d --name "$NAME" --user "$(id -u):$(id -g)" -p 127.0.0.1::8080 -v "$DATA:/data" "$IMAGE" \
    serve --checkpoint /data/cv --host 0.0.0.0 >/dev/null
PORT=$("$DOCKER" port "$NAME" 8080/tcp | head -1 | sed 's/.*://')
python3 - "$PORT" <<'PY' || { "$DOCKER" logs "$NAME" 2>&1 | tail -20; "$DOCKER" rm -f "$NAME" >/dev/null; exit 1; }
import json, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(120):
    try:
        if json.load(urllib.request.urlopen(base + "/health", timeout=2))["status"] == "ok":
            break
    except OSError:
        time.sleep(0.5)
else:
    sys.exit("the server did not come up")
post = lambda body: urllib.request.urlopen(urllib.request.Request(
    base + "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}), timeout=60)
reply = json.load(post({"prompt": "We ", "max_tokens": 50, "seed": 1}))
assert len(reply["choices"][0]["text"]) == 50, reply
stream = post({"prompt": "We ", "max_tokens": 50, "seed": 1, "stream": True}).read().decode()
assert stream.rstrip().endswith("data: [DONE]"), stream[-200:]
streamed = "".join(c["text"] for line in stream.split("\n\n") if line.startswith("data: {")
                   for c in json.loads(line[6:])["choices"])
assert streamed == reply["choices"][0]["text"], (streamed, reply)
print("served:", repr(streamed))
PY
"$DOCKER" stop -t 20 "$NAME" >/dev/null
CODE=$("$DOCKER" wait "$NAME")
LOGS=$("$DOCKER" logs "$NAME" 2>&1)
"$DOCKER" rm "$NAME" >/dev/null
[ "$CODE" = 0 ] || { echo "expected exit 0 after docker stop, got $CODE"; echo "$LOGS" | tail -5; exit 1; }
echo "$LOGS" | grep -q "charrnn serve: stopped" || { echo "$LOGS" | tail -5; exit 1; }

for f in speeches.h5 speeches.json cv/checkpoint_5.pt cv/checkpoint_5.json sample.txt; do
    [ -s "$DATA/$f" ] || { echo "missing on the host: $f"; exit 1; }
    owner=$(stat -c %u "$DATA/$f")
    [ "$owner" = "$(id -u)" ] || { echo "$f belongs to uid $owner, not $(id -u)"; exit 1; }
done
say "sample: $(head -c 120 "$DATA/sample.txt" | tr '\n' ' ')"
echo "docker test: 4 passed, 0 failed"
