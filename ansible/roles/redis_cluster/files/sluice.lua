#!lua name=sluice
--[[
Sluice's Redis Functions library (Redis 7.0, Lua 5.1): the processor's per-tenant
aggregates, their rebuild by `sluice replay`, and the API's per-tenant rate limiter
(DESIGN.md, "Data flow").

Redis Cluster rule: every key a function touches is passed in KEYS, and all keys of one
call share a hash tag (`sluice:{<tenant>}:...`). No function builds a key name itself.

  FCALL    sluice_aggregate       1 <bucket-hash> <event_type> <increment> <ttl_seconds>
  FCALL    sluice_aggregate_set   1 <bucket-hash> <ttl_seconds> [<event_type> <count> ...]
  FCALL    sluice_rate_limit      2 <window-zset> <seq-counter> <limit> <window_ms> [now_ms]
  FCALL_RO sluice_aggregates_read 1 <bucket-hash>
]]

-- An argument as it may appear in an error reply: quoted, short, one line.
local function shown(value)
  if value == nil then return 'nothing' end
  return "'" .. (string.gsub(string.sub(value, 1, 64), '%c', '?')) .. "'"
end

-- Integer arguments: decimal digits only, at most 15 of them (exact in a Lua double).
local function integer_arg(fname, argname, value, min)
  local n = type(value) == 'string' and #value <= 15 and string.match(value, '^%d+$')
    and tonumber(value)
  if not n or n < min then
    return nil, redis.error_reply(string.format(
      'ERR %s: %s must be an integer >= %d, got %s', fname, argname, min, shown(value)))
  end
  return n
end

local function key_count_error(fname, expected, keys)
  return redis.error_reply(string.format(
    'ERR %s: expected %d key(s) (numkeys), got %d', fname, expected, #keys))
end

--[[
sluice_aggregate: count one event type in a tenant's minute bucket.
KEYS[1] the bucket hash, e.g. sluice:{t1}:agg:202611262301
ARGV    event_type, increment (integer >= 1), ttl_seconds (integer >= 1)
Returns the event type's new count. Field `_total` counts every event of the bucket.

Expiry: EXPIRE ... LT sets the TTL when the key has none and otherwise only shortens it.
The bucket thus expires ttl_seconds after its first event (later events do not keep it
alive), repeating a call never extends it, and the TTL is always <= ttl_seconds.
]]
local function aggregate(keys, args)
  local fname = 'sluice_aggregate'
  if #keys ~= 1 then return key_count_error(fname, 1, keys) end
  local event_type = args[1]
  if type(event_type) ~= 'string' or event_type == '' or event_type == '_total' then
    return redis.error_reply(string.format(
      "ERR %s: event_type must be a non-empty string other than '_total', got %s",
      fname, shown(event_type)))
  end
  local increment, err = integer_arg(fname, 'increment', args[2], 1)
  if not increment then return err end
  local ttl
  ttl, err = integer_arg(fname, 'ttl_seconds', args[3], 1)
  if not ttl then return err end

  local count = redis.call('HINCRBY', keys[1], event_type, args[2])
  redis.call('HINCRBY', keys[1], '_total', args[2])
  redis.call('EXPIRE', keys[1], args[3], 'LT')
  return count
end

--[[
sluice_aggregate_set: replace a bucket with counts rebuilt from PostgreSQL (`sluice replay`).
KEYS[1] the bucket hash, e.g. sluice:{t1}:agg:202611262301
ARGV    ttl_seconds (integer >= 1), then event_type, count pairs (count integer >= 0; each
        type at most once, validated as sluice_aggregate's event_type)
Returns {total, changed}: the new `_total` (the sum of the counts; never passed in), and 1 when
the bucket held other counts before (0 when it was already exactly this).

Every argument is checked before anything is written; then, atomically, the bucket is deleted,
the non-zero counts and `_total` are written and EXPIRE sets ttl_seconds, the bucket's remaining
lifetime computed by the caller. Absolute, not an increment: a repeated call leaves the same
bucket. No pairs, or only zero counts, leave no bucket at all.
]]
local function aggregate_set(keys, args)
  local fname = 'sluice_aggregate_set'
  if #keys ~= 1 then return key_count_error(fname, 1, keys) end
  local ttl, err = integer_arg(fname, 'ttl_seconds', args[1], 1)
  if not ttl then return err end
  if #args % 2 ~= 1 then
    return redis.error_reply(string.format(
      'ERR %s: expected ttl_seconds then event_type, count pairs, got %d argument(s) after '
      .. 'ttl_seconds', fname, #args - 1))
  end
  local counts, seen, total = {}, {}, 0
  for i = 2, #args, 2 do
    local event_type = args[i]
    if event_type == '' or event_type == '_total' then
      return redis.error_reply(string.format(
        "ERR %s: event_type must be a non-empty string other than '_total', got %s",
        fname, shown(event_type)))
    end
    if seen[event_type] then
      return redis.error_reply(string.format(
        'ERR %s: event_type %s is given twice; pass each type once with its whole count',
        fname, shown(event_type)))
    end
    seen[event_type] = true
    local count
    count, err = integer_arg(fname, 'count', args[i + 1], 0)
    if not count then return err end
    if count > 0 then
      counts[#counts + 1] = {event_type, count}
      total = total + count
    end
  end

  local before = redis.call('HGETALL', keys[1])
  local changed = 0
  if #before ~= 2 * (#counts + (total > 0 and 1 or 0)) then
    changed = 1
  else
    local old = {}
    for j = 1, #before, 2 do old[before[j]] = tonumber(before[j + 1]) end
    if total > 0 and old['_total'] ~= total then changed = 1 end
    for _, pair in ipairs(counts) do
      if old[pair[1]] ~= pair[2] then changed = 1 end
    end
  end

  redis.call('DEL', keys[1])
  if total > 0 then
    for _, pair in ipairs(counts) do
      redis.call('HSET', keys[1], pair[1], string.format('%d', pair[2]))
    end
    redis.call('HSET', keys[1], '_total', string.format('%d', total))
    redis.call('EXPIRE', keys[1], args[1])
  end
  return {total, changed}
end

--[[
sluice_rate_limit: exact sliding-log limiter, at most `limit` requests in any window_ms.
KEYS[1] the tenant's window (sorted set of request entries scored by ms), e.g. sluice:{t1}:rl
KEYS[2] a counter in the same slot that makes entries unique, e.g. sluice:{t1}:rl:seq
ARGV    limit (integer >= 1), window_ms (integer >= 1), now_ms (optional; default: TIME)
Returns {1, remaining, 0} when allowed (the request is recorded),
        {0, 0, retry_after_ms} when denied (nothing recorded; 1 <= retry_after_ms <= window_ms).
The window at now_ms is (now_ms - window_ms, now_ms]. Both keys get PEXPIRE window_ms on
every allowed request, so an idle tenant leaves nothing behind.
]]
local function rate_limit(keys, args)
  local fname = 'sluice_rate_limit'
  if #keys ~= 2 then return key_count_error(fname, 2, keys) end
  local limit, err = integer_arg(fname, 'limit', args[1], 1)
  if not limit then return err end
  local window
  window, err = integer_arg(fname, 'window_ms', args[2], 1)
  if not window then return err end
  local now
  if args[3] == nil then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  else
    now, err = integer_arg(fname, 'now_ms', args[3], 0)
    if not now then return err end
  end

  redis.call('ZREMRANGEBYSCORE', keys[1], '-inf', now - window)
  local count = redis.call('ZCARD', keys[1])
  if count < limit then
    local seq = redis.call('INCR', keys[2])
    redis.call('ZADD', keys[1], now, string.format('%d-%d', now, seq))
    redis.call('PEXPIRE', keys[1], window)
    redis.call('PEXPIRE', keys[2], window)
    return {1, limit - count - 1, 0}
  end
  local oldest = tonumber(redis.call('ZRANGE', keys[1], 0, 0, 'WITHSCORES')[2])
  -- oldest > now - window after the trim; the clamp covers a clock that went backwards.
  local retry_after = math.max(1, math.min(window, oldest + window - now))
  return {0, 0, retry_after}
end

--[[
sluice_aggregates_read (no-writes, so FCALL_RO works on replicas): one bucket.
KEYS[1] the bucket hash. Returns HGETALL as a flat array: field, count, field, count, ...
]]
local function aggregates_read(keys, args)
  if #keys ~= 1 then return key_count_error('sluice_aggregates_read', 1, keys) end
  return redis.call('HGETALL', keys[1])
end

redis.register_function{function_name = 'sluice_aggregate', callback = aggregate}
redis.register_function{function_name = 'sluice_aggregate_set', callback = aggregate_set}
redis.register_function{function_name = 'sluice_rate_limit', callback = rate_limit}
redis.register_function{
  function_name = 'sluice_aggregates_read',
  callback = aggregates_read,
  flags = {'no-writes'},
}
