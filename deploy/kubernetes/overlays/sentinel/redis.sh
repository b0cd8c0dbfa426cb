# Starts this pod's Redis server. If a Sentinel names a master, it replicates
# that one (or is it); when none answers, as at the first start of the set,
# redis-0 is the master and the others replicate it. Each announces its DNS
# name, which the Sentinels hand to the clients. Protected mode is off, as
# in the official image: the NetworkPolicy says who may connect.
set -eu
me="$(hostname).redis"
master=""
for s in redis-0.redis redis-1.redis redis-2.redis; do
  m=$(timeout 2 redis-cli -h "$s" -p 26379 --raw sentinel get-master-addr-by-name mymaster 2>/dev/null | head -n 1) || true
  if [ -n "$m" ]; then
    master=$m
    break
  fi
done
[ -n "$master" ] || master=redis-0.redis
set -- redis-server --appendonly yes --protected-mode no --replica-announce-ip "$me"
if [ "$master" != "$me" ]; then
  set -- "$@" --replicaof "$master" 6379
fi
exec "$@"
