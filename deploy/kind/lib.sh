# shellcheck shell=bash disable=SC2034 # the names are used by the scripts that source this file
# Shared by scripts/kind-up and scripts/kind-down (sourced, never run): the names the kind quick
# start uses, step announcements, --dry-run and the check for the tools. See docs/kind.md.

KIND_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KIND_CLUSTER=${JOBNET_KIND_CLUSTER:-jobnet}
# Generated keys and the cluster's kubeconfig; the user's ~/.kube/config is never touched.
STATE_DIR=${JOBNET_KIND_STATE:-$KIND_REPO/.jobnet-kind}
OPERATOR_NAMESPACE=jobnet-system
OPERATOR_RELEASE=jobnet-operator
# These three must match deploy/kind/values.yaml, namespace.yaml and vm.yaml (tests/kind checks).
OPERATOR_IMAGE=jobnet-operator:kind
VM_IMAGE=jobnet-demo-vm:kind
DEMO_NAMESPACE=jobnet-demo
DRY_RUN=0

# What to do when a tool is missing. (A case, not an associative array: macOS ships bash 3.2.)
install_hint() {
  case $1 in
    docker) echo "Docker Engine or Docker Desktop: https://docs.docker.com/engine/install/" ;;
    kind) echo "https://kind.sigs.k8s.io/docs/user/quick-start/#installation (e.g. go install sigs.k8s.io/kind@latest)" ;;
    helm) echo "Helm 3.8 or newer: https://helm.sh/docs/intro/install/" ;;
    kubectl) echo "https://kubernetes.io/docs/tasks/tools/" ;;
    kubectl-jobnet) echo "the kubectl plugin of this project: python3 -m pip install . (in this checkout)" ;;
    ssh-keygen) echo "OpenSSH's client tools: apt-get install openssh-client (Debian/Ubuntu)" ;;
  esac
}

step() {
  printf '\n== %s\n' "$*"
}

note() {
  printf '   %s\n' "$*"
}

die() {
  printf '%s: %s\n' "$(basename "$0")" "$*" >&2
  exit 1
}

print_command() {
  local quoted
  printf -v quoted '%q ' "$@"
  printf '+ %s\n' "${quoted% }"
}

# Print a command, then run it (only print it with --dry-run).
run() {
  print_command "$@"
  ((DRY_RUN)) || "$@"
}

parse_arguments() {
  local usage=$1
  shift
  while (($#)); do
    case $1 in
      --dry-run) DRY_RUN=1 ;;
      -h | --help)
        printf '%s\n' "$usage"
        exit 0
        ;;
      *)
        printf '%s\n' "$usage" >&2
        exit 2
        ;;
    esac
    shift
  done
}

# Stop, naming every missing tool with how to install it (a dry run only warns).
require_tools() {
  local tool missing=()
  step "Checking for $*"
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]} == 0)); then
    note "all found"
  else
    for tool in "${missing[@]}"; do
      printf '   missing: %-15s install: %s\n' "$tool" "$(install_hint "$tool")" >&2
    done
    ((DRY_RUN)) || die "missing ${missing[*]}: install them (see above), then run this again"
    note "(dry run: continuing; a real run stops here)"
  fi
}

require_docker_daemon() {
  if ((!DRY_RUN)) && ! docker info >/dev/null 2>&1; then
    die "docker is installed but its daemon does not answer ('docker info' fails): start Docker, then run this again"
  fi
}

# True when the kind cluster exists (a dry run shows what a fresh machine would do: it does not).
cluster_exists() {
  ((!DRY_RUN)) && kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"
}
