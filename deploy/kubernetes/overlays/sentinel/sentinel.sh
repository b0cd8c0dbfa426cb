# Writes this pod's Sentinel configuration, which Sentinel rewrites as it
# learns (so it lives on an emptyDir), and starts the Sentinel. It monitors
# the master that another Sentinel names, else redis-0 (master.sh); two of
# the three Sentinels must agree that the master is down before they fail
# over.
set -eu
me="$(hostname).redis"
. "$(dirname "$0")/master.sh"
cat >/sentinel/sentinel.conf <<CONF
port 26379
protected-mode no
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $me
sentinel monitor mymaster $master 6379 2
sentinel down-after-milliseconds mymaster 5000
sentinel failover-timeout mymaster 60000
sentinel parallel-syncs mymaster 1
CONF
exec redis-server /sentinel/sentinel.conf --sentinel
