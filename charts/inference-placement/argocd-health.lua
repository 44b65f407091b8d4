-- Argo CD health check for placement.inference.dev/InferenceWorkload.
-- Install as argocd-cm key `resource.customizations.health.placement.inference.dev_InferenceWorkload`
-- (docs/argocd.md). Argo CD runs it with gopher-lua (Lua 5.1) and a global `obj`.
--
--   Progressing  the operator has not reconciled this generation yet, or a migration is in flight
--                (Migrating=True), or Ready is Unknown / False while a target is still coming up
--   Degraded     InvalidSpec=True, or Ready=False with a failure reason (target failed or not ready, cloud API
--                error, resource not owned, ...)
--   Healthy      Ready=True
-- Only Ready (which summarises the others), Migrating and InvalidSpec are read.

local hs = {}

-- Ready=False reasons that mean "waiting", not "broken" (everything else is a failure).
local waiting_reasons = {
  AwaitingPlacement = true,
  TargetProvisioning = true,
}

local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil then
    return c.reason
  end
  return fallback
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the workload"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. string.format("%d", generation)
  return hs
end

-- An invalid spec is the user's to fix, whatever Ready says (a new workload has no Placed yet, so Ready is Unknown).
local invalid = condition(status, "InvalidSpec")
if invalid ~= nil and invalid.status == "True" then
  hs.status = "Degraded"
  hs.message = "InvalidSpec: " .. describe(invalid, "the spec is invalid")
  return hs
end

local migrating = condition(status, "Migrating")
if migrating ~= nil and migrating.status == "True" then
  hs.status = "Progressing"
  hs.message = "Migrating: " .. describe(migrating, "migration in progress")
  return hs
end

local ready = condition(status, "Ready")
if ready == nil or ready.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = describe(ready, "Waiting for the Ready condition")
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  if status.placement ~= nil then
    hs.message = "Serving on " .. status.placement
  else
    hs.message = describe(ready, "Ready")
  end
  return hs
end

-- Ready=False
if ready.reason ~= nil and waiting_reasons[ready.reason] then
  hs.status = "Progressing"
else
  hs.status = "Degraded"
end
local reason = ready.reason or "NotReady"
if ready.message ~= nil and ready.message ~= "" then
  hs.message = reason .. ": " .. ready.message
else
  hs.message = reason
end
return hs
