// Every service's `/asyncapi.json` under `ferry up`: valid against the AsyncAPI 3.0.0 JSON
// Schema (from the @asyncapi/specs package, checked with Ajv), and naming exactly the topics the
// service uses. Called by dashboard.mjs on its running `ferry up`.
import { createRequire } from 'node:module';

import Ajv from 'ajv';
import addFormats from 'ajv-formats';

const require = createRequire(import.meta.url);
const SCHEMA = require('@asyncapi/specs/schemas/3.0.0-without-$id.json');

/** The topics each reference service sends to or receives from. */
export const TOPICS = {
  'courses-producer': ['test'],
  'courses-consumer': ['test'],
  customers: ['ReactiveMicroservices'],
  orders: ['ReactiveMicroservices'],
  'users-producer': ['tasks', 'user_tasks'],
  'users-consumer': ['tasks', 'user_tasks'],
  'posts-command': ['SocialMediaPostEvents', 'SocialMediaPostReadModelRestore'],
  'posts-query': ['SocialMediaPostEvents', 'SocialMediaPostReadModelRestore'],
  'invoice-generator': ['generate-invoice', 'invoice-generated'],
  'score-calculator': ['calculate-score', 'invoice-generated', 'score-calculated'],
  dashboard: ['calculate-score', 'generate-invoice'],
};

/**
 * Fetches and checks every service's document; `services` maps names to host:port.
 * Returns one line per service; throws `new Failure(...)` listing every problem found.
 */
export async function checkAsyncApi(services, Failure) {
  const ajv = new Ajv({ strict: false, allErrors: true });
  addFormats(ajv);
  const validate = ajv.compile(SCHEMA);
  const problems = [];
  const lines = [];
  for (const [service, want] of Object.entries(TOPICS)) {
    const addr = services.get(service);
    if (!addr) {
      problems.push(`${service}: not in ferry up's URL table`);
      continue;
    }
    const response = await fetch(`http://${addr}/asyncapi.json`);
    if (response.status !== 200) {
      problems.push(`${service}: /asyncapi.json answered ${response.status}`);
      continue;
    }
    const doc = await response.json();
    if (!validate(doc)) {
      const errors = validate.errors.slice(0, 5).map((e) => `${e.instancePath || '/'} ${e.message}`);
      problems.push(`${service}: not a valid AsyncAPI 3.0.0 document: ${errors.join('; ')}`);
    }
    const topics = [...new Set(Object.values(doc.channels ?? {}).map((c) => c.address))].sort();
    if (JSON.stringify(topics) !== JSON.stringify([...want].sort())) {
      problems.push(`${service}: topics ${JSON.stringify(topics)}, expected ${JSON.stringify(want)}`);
    }
    const messages = Object.keys(doc.components?.messages ?? {});
    lines.push(`${service}: ${topics.join(', ')} (${messages.length} message types)`);
  }
  if (problems.length) throw new Failure(`AsyncAPI documents:\n  ${problems.join('\n  ')}`);
  return lines;
}
