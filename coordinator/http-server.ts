/**
 * The coordinator's HTTP server: GET /api/status (JSON for scripts and the web page) and a plain index page.
 * Cross-origin isolation headers are set on every response so the browser peer's WASM backend can use
 * threads and SIMD once the page is served from here.
 */
import { createServer, type Server } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, resolve, sep } from 'node:path';

export interface HttpServerOptions {
  host: string;
  port: number;
  status: () => object;
  /** What a browser needs to join: the WebSocket multiaddrs and the join token. */
  joinInfo: () => { multiaddrs: string[]; token: string };
  /** The built browser client (dist/browser). */
  staticDir: string;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
  '.wasm': 'application/wasm',
};

const ISOLATION = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

export async function startHttpServer(o: HttpServerOptions): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    let url: URL;
    let path: string;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
      path = decodeURIComponent(url.pathname);
    } catch {
      res.writeHead(400, { ...ISOLATION, 'Content-Type': 'text/plain' }).end('bad request: malformed URL');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { ...ISOLATION, Allow: 'GET, HEAD' }).end();
      return;
    }
    if (url.pathname === '/api/status') {
      let body: string;
      try {
        body = JSON.stringify(o.status());
      } catch (err) {
        res.writeHead(500, { ...ISOLATION, 'Content-Type': 'text/plain' }).end(`status failed: ${(err as Error).message}`);
        return;
      }
      res.writeHead(200, { ...ISOLATION, 'Content-Type': 'application/json', 'Cache-Control': 'no-store' }).end(body);
      return;
    }
    if (url.pathname === '/api/join') {
      res.writeHead(200, { ...ISOLATION, 'Content-Type': 'application/json', 'Cache-Control': 'no-store' }).end(JSON.stringify(o.joinInfo()));
      return;
    }
    // Static files of the browser client, by exact path under its folder (no traversal out of it).
    const root = resolve(o.staticDir);
    const file = resolve(join(root, path === '/' ? 'index.html' : path));
    if (!file.startsWith(root + sep) || !TYPES[extname(file)]) {
      res.writeHead(404, { ...ISOLATION, 'Content-Type': 'text/plain' }).end('not found');
      return;
    }
    readFile(file).then(
      (body) => res.writeHead(200, { ...ISOLATION, 'Content-Type': TYPES[extname(file)], 'Cache-Control': 'no-cache' }).end(body),
      () => res.writeHead(404, { ...ISOLATION, 'Content-Type': 'text/plain' }).end('not found'),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : o.port;
  return { server, url: `http://${o.host.includes(':') ? `[${o.host}]` : o.host}:${port}/` };
}
