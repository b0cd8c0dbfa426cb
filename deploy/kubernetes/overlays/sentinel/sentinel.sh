# Writes this pod's Sentinel configuration, which Sentinel rewrites as it
# learns (so it lives on an emptyDir), and starts the Sentinel. It monitors
# the master that another Sentinel names, else redis-0; two of the three
# Sentinels must agree that the master is down before they fail over.
set -eu
me="$(hostname).redis"
master=""
for s in redis-0.redis redis-1.redis redis-2.redis; do
  [ "$s" != "$me" ] || continue
  m=$(timeout 2 redis-cli -h "$s" -p 26379 --raw sentinel get-master-addr-by-name mymaster 2>/dev/null | head -n 1) || true
  if [ -n "$m" ]; then
    master=$m
    break
  fi
done
[ -n "$master" ] || master=redis-0.redis
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
