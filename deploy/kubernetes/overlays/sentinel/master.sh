# Sourced by redis.sh and sentinel.sh: sets master to the DNS name of the
# master that a Sentinel of the set names, or to redis-0.redis when none
# answers, as at the first start of the set. Its own pod's Sentinel answers
# too when only the Redis container restarts.
master=""
for s in redis-0.redis redis-1.redis redis-2.redis; do
  m=$(timeout 2 redis-cli -h "$s" -p 26379 --raw sentinel get-master-addr-by-name mymaster 2>/dev/null | head -n 1) || true
  if [ -n "$m" ]; then
    master=$m
    break
  fi
done
[ -n "$master" ] || master=redis-0.redis
