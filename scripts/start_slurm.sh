#!/usr/bin/env bash
# Starts a one-node Slurm cluster on localhost (munged, slurmctld, slurmd), for the CI test of
# pipelines/slurm. Idempotent: does nothing when sinfo already answers. Needs root and Debian's
# slurm-wlm + munge packages (.ci/run installs them). No cgroups: proctrack/linuxproc, task/none.
set -euo pipefail
case "$(sinfo -h -o %T 2>/dev/null | head -1)" in
  idle|mixed|allocated) echo "slurm: already running"; exit 0 ;;
esac
for bin in munged slurmctld slurmd sbatch; do
  command -v "$bin" >/dev/null || { echo "slurm: $bin not installed (apt-get install slurm-wlm munge)" >&2; exit 1; }
done
CONF_DIR=/etc/slurm
NODE="$(hostname -s)"
CPUS="$(nproc)"
mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge /etc/munge

# munge: a key generated here, on this machine.
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- munged
fi

cat > "$CONF_DIR/slurm.conf" <<CONF
ClusterName=dno-ci
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MaxArraySize=10001
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 1 30); do
  state="$(sinfo -h -o %T 2>/dev/null | head -1 || true)"
  case "$state" in idle|mixed|allocated) echo "slurm: node $NODE $state"; exit 0;; esac
  sleep 1
done
echo "slurm: node did not come up (state '${state:-none}'); see /var/log/slurm/" >&2
exit 1
