// Sends the test's messages through the official Segment Node SDK (@segment/analytics-node),
// configured as its README says, pointed at siyu. Driven by ../segment_sdk_test.py --sdk node,
// which does all the checking through siyu's read API.
//
//   node send.mjs '<json: {phase, host, writeKey, userId, anonymousId, name, email, phone, run, messageId}>'
//
// phase "main": identify, track x2, page, screen, group, alias; phase "dedup": one track with an
// explicit messageId, sent twice in two separate flushes. Prints one JSON line
// {"errors": [...], "responses": [status, ...]} and exits 1 if the SDK reported any error.

import { Analytics } from '@segment/analytics-node'

const cfg = JSON.parse(process.argv[2])
const errors = []
const responses = []

function client() {
  const analytics = new Analytics({
    writeKey: cfg.writeKey,
    host: cfg.host,
    flushAt: 20,
    flushInterval: 200,
    maxRetries: 1,
    httpRequestTimeout: 10000,
  })
  analytics.on('error', (err) => errors.push(`emitter error: ${err?.code ?? ''} ${err?.reason ?? err}`))
  analytics.on('http_response', (r) => {
    responses.push(r.status)
    if (r.status < 200 || r.status >= 300) errors.push(`http ${r.status} ${r.statusText} for ${r.body}`)
  })
  return analytics
}

// Each call's callback reports delivery failure for that message.
const done = (what) => (err) => {
  if (err) errors.push(`${what}: ${err?.message ?? err}`)
}

if (cfg.phase === 'main') {
  const analytics = client()
  const userId = cfg.userId
  analytics.identify({ userId, traits: { name: cfg.name, email: cfg.email, phone: cfg.phone, plan: 'gold' } }, done('identify'))
  analytics.track(
    {
      userId,
      event: 'Order Completed',
      properties: {
        order_id: `o-${cfg.run}`,
        total: 199.9,
        revenue: 180.0,
        currency: 'CNY',
        products: [{ product_id: 'p1', sku: 'TEA-01', price: 199.9, quantity: 1 }],
      },
    },
    done('track Order Completed'),
  )
  analytics.track({ userId, event: 'Store Visit', properties: { store: 'Shanghai Xintiandi' } }, done('track Store Visit'))
  analytics.page({ userId, category: 'Docs', name: 'Pricing', properties: { url: 'https://shop.example.com/pricing' } }, done('page'))
  analytics.screen({ userId, category: 'Shop', name: 'Home', properties: { tab: 'featured' } }, done('screen'))
  analytics.group({ userId, groupId: 'acme-co', traits: { name: 'Acme Co', industry: 'retail' } }, done('group'))
  analytics.alias({ userId, previousId: cfg.anonymousId }, done('alias'))
  await analytics.closeAndFlush({ timeout: 20000 })
} else if (cfg.phase === 'dedup') {
  for (const attempt of [1, 2]) {
    const analytics = client()
    analytics.track(
      { userId: cfg.userId, event: 'Store Visit', properties: { store: 'Beijing Sanlitun' }, messageId: cfg.messageId },
      done(`dedup track #${attempt}`),
    )
    await analytics.closeAndFlush({ timeout: 20000 })
  }
} else {
  errors.push(`unknown phase ${cfg.phase}`)
}

console.log(JSON.stringify({ errors, responses }))
process.exit(errors.length ? 1 : 0)
