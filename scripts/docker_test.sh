#!/usr/bin/env bash
# `make docker-test`: prove the medssl image builds and runs offline on this machine, for real.
#
#  1. apt-get install docker.io debootstrap docker-compose; start a private dockerd (own data-root,
#     exec-root, socket, pidfile; --iptables=false --bridge=none: the host firewall is untouched)
#  2. debootstrap a minimal Debian (mirror read from this machine's apt sources) -> `docker import`
#     as the base image (no image registry needed)
#  3. docker build --network none from docker/wheelhouse: docker/Dockerfile.cpu and docker/Dockerfile
#  4. docker run --network none --read-only --tmpfs /tmp as uid 10001: write phantom DICOMs, check
#     that data is read-only, run the compose pipeline (docker/compose.yaml) on them twice (the
#     rerun must skip finished work), run `medssl demo` when the image has it; outputs must appear
#     in the output volume, owned by uid 10001.
# Everything lives under one temp dir, removed on exit with the daemon (stopped by its PID).
# Needs root and docker/wheelhouse (`make wheelhouse`; `make docker-test` runs it first).
# Env: MEDSSL_DEBIAN_SUITE [bookworm: Python 3.11 = the wheelhouse's], MEDSSL_DEBIAN_MIRROR [from
# the apt sources], MEDSSL_DOCKER_TEST_KEEP=1 keeps the temp dir, MEDSSL_DOCKER_TEST_JSON=FILE
# writes the step timings as JSON, MEDSSL_DOCKER_TEST_DEMO_ARGS: `medssl demo` arguments
# (default: DEMO_ARGS below).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONTEXT="$REPO/docker"
TORCH_PIN=${TORCH_PIN:-torch==2.13.0}
SUITE=${MEDSSL_DEBIAN_SUITE:-bookworm}
KEEP=${MEDSSL_DOCKER_TEST_KEEP:-0}
TIMINGS_JSON=${MEDSSL_DOCKER_TEST_JSON:-}
IMAGE_UID=10001
BASE=medssl-test-base:$SUITE
IMAGE=medssl-test:cpu
IMAGE_GPU=medssl-test:gpu-dockerfile
PROJECT=medsslpipeline
# The demo's smallest useful settings (the embedded Kermany subset ships inside the image).
DEMO_ARGS="--size 64 --input-size 64 --pretrain-epochs 1 --finetune-epochs 1 --methods mocov2-micle --modes linear --seeds 0"
DOCKER=/usr/bin/docker          # the client from docker.io, matching its daemon (not one earlier on PATH)
DOCKERD_PID=

log() { printf '[docker-test %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (apt-get and dockerd need it)"
ls "$CONTEXT"/wheelhouse/torch-*.whl "$CONTEXT"/wheelhouse/medssl-*.whl >/dev/null 2>&1 \
    || die "$CONTEXT/wheelhouse lacks the torch or medssl wheel; run: make wheelhouse"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/medssl-docker-test.XXXXXX")
STEP_NAMES=()
STEP_SECONDS=()

now() { date +%s.%N; }
# step NAME CMD...: run CMD, record its wall time.
step() {
    local name=$1 t0 dt
    shift
    log "$name ..."
    t0=$(now)
    "$@"
    dt=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    STEP_NAMES+=("$name")
    STEP_SECONDS+=("$dt")
    log "$name: ${dt} s"
}

cleanup() {
    local rc=$?
    set +e
    if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        log "stopping dockerd (pid $DOCKERD_PID)"
        kill -TERM "$DOCKERD_PID"
        for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$DOCKERD_PID" 2>/dev/null && kill -KILL "$DOCKERD_PID"
        wait "$DOCKERD_PID" 2>/dev/null
    fi
    # Anything the daemon left mounted under WORK (overlays, netns) must go before deleting WORK.
    awk -v w="$WORK" '$2 ~ "^"w { print $2 }' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
    if [ "$KEEP" = 1 ]; then
        log "kept $WORK (dockerd stopped)"
    else
        rm -rf "$WORK"
    fi
    [ "$rc" -eq 0 ] && log "PASSED" || log "exit status $rc"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_tools() {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        docker.io debootstrap docker-compose >"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log"; return 1; }
}

start_dockerd() {
    mkdir -p "$WORK/docker" "$WORK/exec"
    dockerd --data-root "$WORK/docker" --exec-root "$WORK/exec" -H "unix://$WORK/docker.sock" \
        --pidfile "$WORK/dockerd.pid" --iptables=false --bridge=none >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    export DOCKER_HOST="unix://$WORK/docker.sock"
    for _ in $(seq 240); do
        "$DOCKER" version >/dev/null 2>&1 && return 0
        kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -20 "$WORK/dockerd.log"; die "dockerd exited"; }
        sleep 0.25
    done
    tail -20 "$WORK/dockerd.log"
    die "dockerd did not answer within 60 s"
}

# The Debian mirror this machine's apt uses for SUITE (deb822 .sources or one-line .list files).
apt_mirror() {
    if [ -n "${MEDSSL_DEBIAN_MIRROR:-}" ]; then echo "$MEDSSL_DEBIAN_MIRROR"; return; fi
    APT_ETC=${APT_ETC:-/etc/apt} python3 - "$SUITE" <<'PY'
import glob, os, re, sys
suite, etc = sys.argv[1], os.environ["APT_ETC"]
for f in [f"{etc}/sources.list"] + sorted(glob.glob(f"{etc}/sources.list.d/*.list")):
    try:
        lines = open(f).read().splitlines()
    except OSError:
        continue
    for line in lines:
        parts = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
        if len(parts) >= 3 and parts[0] == "deb" and parts[2] == suite:
            print(parts[1]); sys.exit(0)
for f in sorted(glob.glob(f"{etc}/sources.list.d/*.sources")):
    for block in re.split(r"\n\s*\n", open(f).read()):
        fields = {}
        for line in block.splitlines():
            if line.startswith("#") or line[:1].isspace() or ":" not in line:
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.split()
        if ("deb" in fields.get("types", []) and suite in fields.get("suites", [])
                and fields.get("enabled", ["yes"])[0].lower() != "no" and fields.get("uris")):
            print(fields["uris"][0]); sys.exit(0)
sys.exit(f"no 'deb <mirror> {suite}' entry in {etc}/sources.list(.d); set MEDSSL_DEBIAN_MIRROR")
PY
}

make_base_image() {
    local mirror
    mirror=$(apt_mirror)
    log "debootstrap $SUITE from $mirror"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        "$SUITE" "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; return 1; }
    rm -rf "$WORK/rootfs/var/lib/apt/lists/"* "$WORK/rootfs/var/cache/apt/"*.bin
    # An imported rootfs has no ENV; real base images set PATH, so the Dockerfiles' `$PATH` needs it.
    tar -C "$WORK/rootfs" -c . | "$DOCKER" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE" >/dev/null
    rm -rf "$WORK/rootfs"
}

build_image() {  # build_image DOCKERFILE TAG
    "$DOCKER" build --network none --build-arg "BASE_IMAGE=$BASE" --build-arg "TORCH_PIN=$TORCH_PIN" \
        -f "$1" -t "$2" "$CONTEXT" >"$WORK/build-$(basename "$1").log" 2>&1 \
        || { tail -30 "$WORK/build-$(basename "$1").log"; return 1; }
    [ "$("$DOCKER" run --rm --network none --read-only "$2" --version)" = "medssl $(medssl_version)" ] \
        || die "$2 --version does not match the wheelhouse's medssl"
}

medssl_version() {
    local wheel
    wheel=$(basename "$(ls "$CONTEXT"/wheelhouse/medssl-*.whl | head -1)")
    wheel=${wheel#medssl-}
    echo "${wheel%%-*}"
}

# docker run, the way a hospital would: offline, read-only root, no capabilities, as the image's user.
run_image() {
    "$DOCKER" run --rm --network none --read-only --tmpfs /tmp --cap-drop ALL \
        --security-opt no-new-privileges "$@"
}

make_phantoms() {
    install -d -o "$IMAGE_UID" -g "$IMAGE_UID" "$WORK/data"
    run_image -v "$WORK/data:/data" --entrypoint python "$IMAGE" \
        -m medssl.data.phantom /data/phantoms --patients 16 --size 64 --photometric mixed
    # Labels for `manifest build --labels`: path + finding columns of the ground truth.
    run_image -v "$WORK/data:/data" --entrypoint python "$IMAGE" -c \
        "import pandas as pd; t = pd.read_csv('/data/phantoms/truth.csv'); \
t[['path', 'Cardiomegaly', 'Pleural Effusion', 'Consolidation']].to_csv('/data/labels.csv', index=False)"
    # From here on the data belong to root and are mounted read-only.
    chown -R 0:0 "$WORK/data"
    chmod -R a+rX,go-w "$WORK/data"
    install -d -o "$IMAGE_UID" -g "$IMAGE_UID" "$WORK/out"
}

check_isolation() {
    local got
    got=$(run_image -v "$WORK/data:/data:ro" -v "$WORK/out:/out" --entrypoint sh "$IMAGE" -c '
        id -u
        touch /data/x 2>/dev/null && echo data-writable
        touch /opt/medssl/x 2>/dev/null && echo root-writable
        touch /out/.probe && rm /out/.probe && echo out-writable
        python -c "import matplotlib.pyplot, torch, pydicom, monai, lightning" && echo imports-ok
        true')
    [ "$got" = "$(printf '%s\n' "$IMAGE_UID" out-writable imports-ok)" ] \
        || die "isolation check: expected uid $IMAGE_UID, read-only /data and /, writable /out; got: $got"
}

write_tiny_config() {
    mkdir -p "$WORK/config"
    cat >"$WORK/config/tiny.yaml" <<'YAML'
# docker-test: the smallest settings that exercise every stage on 16 phantom patients (64 px).
name: docker-test
data: {modality: xray, val: 0.2, test: 0.2}
cache: {size: 64, workers: 1}
model: {arch: resnet18, input_size: 64}
ssl: {method: mocov2, queue_size: 16, proj_hidden: 64, proj_dim: 32, monitor_every_n_epochs: 0}
optim: {lr: 0.03}
trainer: {max_epochs: 1, batch_size: 8, num_workers: 0, precision: 32-true, accelerator: cpu, devices: 1,
          checkpoint_every_n_steps: 0}
finetune: {epochs: 1, batch_size: 8}
evaluate: {bootstrap: 20}
study: {budgets: [8], seeds: [0], modes: [linear]}
YAML
}

# The compose pipeline on the phantoms with the tiny config (every stage's log is attached).
compose() {
    MEDSSL_IMAGE=$IMAGE MEDSSL_DATA=$WORK/data MEDSSL_OUT=$WORK/out MEDSSL_CONFIG_DIR=$WORK/config \
    MEDSSL_CONFIG=tiny.yaml MEDSSL_FORMAT=dicom-dir MEDSSL_SOURCE=/data/phantoms \
    MEDSSL_MANIFEST_ARGS="--labels /data/labels.csv" MEDSSL_SPLIT_ARGS="--budgets 8 --seeds 0" \
        docker-compose --ansi never -p "$PROJECT" -f "$CONTEXT/compose.yaml" "$@"
}

# Every stage up to `study`, or up to `pretrain` while the image has no `medssl study`.
stages() {
    if run_image "$IMAGE" study --help >/dev/null 2>&1; then
        echo manifest split cache pretrain study
    else
        echo manifest split cache pretrain
    fi
}

run_pipeline() {  # run_pipeline LOGFILE
    local status services
    services=$(stages)
    # shellcheck disable=SC2086
    compose up --no-color $services >"$1" 2>&1 || { tail -40 "$1"; die "compose up failed"; }
    status=$("$DOCKER" ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}} {{.Status}}')
    if echo "$status" | grep -v 'Exited (0)'; then
        tail -60 "$1"
        die "a pipeline stage did not exit 0: $status"
    fi
    for f in manifest.csv manifest.split.csv manifest.split.budgets.csv cache/meta.json \
             pretrain/checkpoints/last.ckpt pretrain/encoder.pt; do
        [ -s "$WORK/out/$f" ] || { tail -40 "$1"; die "pipeline output $f is missing"; }
    done
    if [ "${services%study}" != "$services" ]; then
        find "$WORK/out/study" -name '*.md' | grep -q . || die "the study wrote no Markdown report"
    fi
    compose rm -f >/dev/null 2>&1
}

check_rerun_skips() {
    grep -q "manifest.csv exists; skipping" "$1" || die "rerun rebuilt the manifest"
    grep -q "manifest.split.csv is up to date" "$1" || die "rerun redid the split"
    grep -q "up to date: /out/cache" "$1" || die "rerun rebuilt the cache"
    grep -q "resuming from /out/pretrain/checkpoints/last.ckpt" "$1" || die "rerun of pretrain did not resume"
    if grep -q "^study" "$1"; then
        grep -q " 0 cells run" "$1" || die "rerun of the study recomputed finished cells"
    fi
}

run_demo() {
    if ! run_image "$IMAGE" demo --help >/dev/null 2>&1; then
        log "the image has no \`medssl demo\` yet; skipped (the compose pipeline covered the stages)"
        return 0
    fi
    # shellcheck disable=SC2086
    run_image -v "$WORK/out:/out" "$IMAGE" demo --out /out/demo ${MEDSSL_DOCKER_TEST_DEMO_ARGS:-$DEMO_ARGS} \
        >"$WORK/demo.log" 2>&1 || { tail -40 "$WORK/demo.log"; die "medssl demo failed"; }
    find "$WORK/out/demo" -name '*.md' | grep -q . || die "medssl demo wrote no Markdown report"
}

check_ownership() {
    local foreign
    foreign=$(find "$WORK/out" ! -uid "$IMAGE_UID" | head -5)
    [ -z "$foreign" ] || die "files in the output volume not owned by uid $IMAGE_UID: $foreign"
    log "$(find "$WORK/out" -type f | wc -l) output files, all owned by uid $IMAGE_UID"
}

report() {
    local i size_cpu size_gpu
    size_cpu=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
    size_gpu=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE_GPU")
    printf '\n%-28s %8s\n' step seconds
    for i in "${!STEP_NAMES[@]}"; do printf '%-28s %8s\n' "${STEP_NAMES[$i]}" "${STEP_SECONDS[$i]}"; done
    printf '%-28s %8s MB (Dockerfile.cpu), %s MB (Dockerfile)\n' "image size" \
        $((size_cpu / 1000000)) $((size_gpu / 1000000))
    if [ -n "$TIMINGS_JSON" ]; then
        {
            printf '{"image_bytes": %s, "image_gpu_dockerfile_bytes": %s, "steps_s": {' "$size_cpu" "$size_gpu"
            for i in "${!STEP_NAMES[@]}"; do
                [ "$i" -gt 0 ] && printf ', '
                printf '"%s": %s' "${STEP_NAMES[$i]}" "${STEP_SECONDS[$i]}"
            done
            printf '}}\n'
        } >"$TIMINGS_JSON"
    fi
}

step "apt-get install" install_tools
step "start dockerd" start_dockerd
step "debootstrap + import" make_base_image
step "build Dockerfile.cpu" build_image "$CONTEXT/Dockerfile.cpu" "$IMAGE"
step "build Dockerfile" build_image "$CONTEXT/Dockerfile" "$IMAGE_GPU"
step "phantom data" make_phantoms
step "read-only/uid checks" check_isolation
write_tiny_config
step "compose pipeline" run_pipeline "$WORK/pipeline1.log"
step "compose rerun (skips)" run_pipeline "$WORK/pipeline2.log"
check_rerun_skips "$WORK/pipeline2.log"
step "medssl demo" run_demo
check_ownership
report
