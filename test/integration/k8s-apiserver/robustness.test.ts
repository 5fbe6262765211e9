import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestApiServer, type TestApiServer } from '../../k8s/index.js';

describe('test API server never crashes on bad input', () => {
  let server: TestApiServer;
  before(async () => {
    server = await startTestApiServer();
  });
  after(async () => {
    await server?.stop();
  });

  const call = async (
    method: string,
    path: string,
    body?: string,
    contentType = 'application/json',
  ): Promise<{ status: number; json: Record<string, unknown> }> => {
    const res = await fetch(server.url + path, { method, headers: { 'Content-Type': contentType }, body });
    const text = await res.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text.split('\n')[0]);
    } catch {
      /* non-JSON answers are checked by status only */
    }
    return { status: res.status, json };
  };

  it('answers each malformed request with a Status naming the problem and keeps serving', async () => {
    const pods = '/api/v1/namespaces/default/pods';
    const cms = '/api/v1/namespaces/default/configmaps';
    const cases: Array<[string, string, string | undefined, number, RegExp, string?]> = [
      ['POST', pods, '[]', 400, /expected a Pod object, got an array/],
      ['POST', pods, '"str"', 400, /expected a Pod object/],
      ['POST', pods, '{"metadata":"x"}', 400, /metadata of a Pod must be an object/],
      ['POST', pods, '{"kind":"Service","metadata":{"name":"a"}}', 400, /kind of the object \(Service\)/],
      ['POST', pods, '{"metadata":{"name":"a"},"spec":{}}', 422, /spec\.containers: Required value/],
      [
        'POST',
        pods,
        '{"metadata":{"name":"Bad_Name"},"spec":{"containers":[{"name":"c","image":"i"}]}}',
        422,
        /metadata\.name: Invalid value: "Bad_Name"/,
      ],
      [
        'POST',
        pods,
        '{"metadata":{"name":"a"},"spec":{"restartPolicy":"Sometimes","containers":[{"name":"c","image":"i"}]}}',
        422,
        /spec\.restartPolicy: Unsupported value/,
      ],
      ['POST', cms, '{"metadata":{"name":"a","labels":{"x":1}}}', 422, /metadata\.labels/],
      ['POST', cms, '{"metadata":{}}', 422, /metadata\.name: Required value/],
      ['POST', cms, '{"metadata":{"name":"rv","resourceVersion":"5"}}', 400, /resourceVersion should not be set/],
      ['POST', cms, '{"metadata":{"name":"ok"}}', 201, /./],
      ['PUT', `${cms}/ok`, '{"metadata":{"name":"other"}}', 400, /does not match the name on the URL/],
      ['PATCH', `${cms}/ok`, '{"op":"add"}', 400, /must be an array/, 'application/json-patch+json'],
      [
        'PATCH',
        `${cms}/ok`,
        '[{"op":"replace","path":"/nope/deeper","value":1}]',
        422,
        /does not exist/,
        'application/json-patch+json',
      ],
      ['PATCH', `${cms}/ok`, '[1]', 400, /bad operation/, 'application/json-patch+json'],
      ['PATCH', `${cms}/ok`, 'x', 415, /unsupported patch content type/, 'text/plain'],
      ['PATCH', `${cms}/ok`, '[]', 400, /merge patch must be a JSON object/, 'application/merge-patch+json'],
      ['DELETE', `${cms}/ok?propagationPolicy=Sideways`, undefined, 400, /propagationPolicy "Sideways"/],
      ['DELETE', `${cms}/ok?gracePeriodSeconds=-4`, undefined, 400, /gracePeriodSeconds "-4"/],
      ['GET', '/apis/nope.dev/v1/things', undefined, 404, /not found/],
      ['GET', '/api/v1/namespaces/default/things/x', undefined, 404, /not found/],
      ['GET', '/api/v1/namespaces/default/pods/a/b/c/d', undefined, 404, /not found/],
      ['GET', '/api/v1/%E0%A4%A', undefined, 400, /malformed URL/],
      ['OPTIONS', cms, undefined, 405, /not allowed/],
      ['GET', `${pods}?labelSelector=${encodeURIComponent('a in (')}`, undefined, 400, /invalid label selector/],
      ['GET', `${pods}?fieldSelector=${encodeURIComponent('~~')}`, undefined, 400, /invalid field selector/],
    ];
    for (const [method, path, body, status, msg, ct] of cases) {
      const r = await call(method, path, body, ct);
      assert.equal(r.status, status, `${method} ${path} ${body ?? ''}: ${JSON.stringify(r.json)}`);
      if (status >= 400) {
        assert.equal(r.json.kind, 'Status', `${method} ${path}`);
        assert.match(String(r.json.message), msg, `${method} ${path}`);
      }
    }
    const watch = await call('GET', `${pods}?watch=true&resourceVersion=abc`);
    assert.equal(watch.json.type, 'ERROR');
    assert.match(String((watch.json.object as Record<string, unknown>).message), /invalid resource version "abc"/);
    const deep = '{"metadata":{"name":"deep"},"data":' + '{"a":'.repeat(20000) + '1' + '}'.repeat(20000) + '}';
    const d = await call('POST', cms, deep);
    assert.ok(d.status >= 200 && d.status < 600);
    const health = await fetch(`${server.url}/healthz`);
    assert.equal(health.status, 200);
  });
});
