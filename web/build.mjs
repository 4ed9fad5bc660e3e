// Builds the dashboard into an output directory: generates the API's types from openapi.json
// (codegen/generate.mjs), type-checks (tsc), bundles and minifies the
// TypeScript and CSS (esbuild, content-hashed names), writes index.html, the service worker, the web
// app manifest and the icons (PNG, drawn here), precompresses every text file (gzip and brotli), and
// writes `assets.tsv`, the table crates/celistra-dashboard/build.rs embeds.
//
//   node build.mjs --out DIR [--no-check]

import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync, readdirSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, constants, deflateSync, gzipSync } from "node:zlib";
import * as esbuild from "esbuild";
import { generate } from "./codegen/generate.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const outIndex = args.indexOf("--out");
if (outIndex < 0 || !args[outIndex + 1]) {
  console.error("usage: node build.mjs --out DIR [--no-check]");
  process.exit(2);
}
const out = args[outIndex + 1];

await generate(here);

if (!args.includes("--no-check")) {
  try {
    execFileSync(process.execPath, [join(here, "node_modules/typescript/bin/tsc"), "--noEmit", "-p", here], {
      stdio: ["ignore", process.stderr, process.stderr],
    });
  } catch {
    console.error("web/: the TypeScript type check failed (errors above)");
    process.exit(1);
  }
}

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "assets"), { recursive: true });
mkdirSync(join(out, "icons"), { recursive: true });

const result = await esbuild.build({
  entryPoints: [join(here, "src/main.ts")],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["chrome110", "firefox115", "safari16"],
  outdir: join(out, "assets"),
  entryNames: "app-[hash]",
  assetNames: "[name]-[hash]",
  metafile: true,
  legalComments: "linked",
  logLevel: "warning",
});
const built = Object.keys(result.metafile.outputs).map((p) => relative(out, p));
const js = built.find((p) => p.endsWith(".js"));
const css = built.find((p) => p.endsWith(".css"));
if (!js || !css) throw new Error(`esbuild produced no JS or CSS: ${built.join(", ")}`);

const version = createHash("sha256")
  .update(built.map((p) => readFileSync(join(out, p))).reduce((a, b) => Buffer.concat([a, b]), Buffer.alloc(0)))
  .digest("hex")
  .slice(0, 16);

const index = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover">
<meta name="color-scheme" content="dark light">
<meta name="theme-color" content="#0f172a">
<meta name="referrer" content="no-referrer">
<title>Celistra</title>
<link rel="manifest" href="/manifest.webmanifest">
<link rel="icon" href="/icons/icon.svg" type="image/svg+xml">
<link rel="apple-touch-icon" href="/icons/icon-192.png">
<link rel="stylesheet" href="/${css}">
<script type="module" src="/${js}"></script>
</head>
<body>
<noscript>The Celistra dashboard needs JavaScript.</noscript>
<div id="app" data-version="${version}"></div>
</body>
</html>
`;
writeFileSync(join(out, "index.html"), index);

const shell = ["/", `/${js}`, `/${css}`, "/manifest.webmanifest", "/icons/icon.svg", "/icons/icon-192.png"];
const sw = readFileSync(join(here, "src/sw.js"), "utf8")
  .replace("__VERSION__", version)
  .replace('"__SHELL__"', JSON.stringify(shell));
writeFileSync(join(out, "sw.js"), sw);

writeFileSync(
  join(out, "manifest.webmanifest"),
  JSON.stringify(
    {
      name: "Celistra",
      short_name: "Celistra",
      description: "Your machines' long-running agents: terminals, approvals, activity.",
      start_url: "/",
      scope: "/",
      display: "standalone",
      background_color: "#0f172a",
      theme_color: "#0f172a",
      icons: [
        { src: "/icons/icon.svg", sizes: "any", type: "image/svg+xml" },
        { src: "/icons/icon-192.png", sizes: "192x192", type: "image/png" },
        { src: "/icons/icon-512.png", sizes: "512x512", type: "image/png" },
        { src: "/icons/maskable-512.png", sizes: "512x512", type: "image/png", purpose: "maskable" },
      ],
    },
    null,
    2,
  ),
);

writeFileSync(join(out, "icons/icon.svg"), readFileSync(join(here, "src/icon.svg")));
writeFileSync(join(out, "icons/icon-192.png"), icon(192, 0.16));
writeFileSync(join(out, "icons/icon-512.png"), icon(512, 0.16));
writeFileSync(join(out, "icons/maskable-512.png"), icon(512, 0));

// The table build.rs reads: url path, file, content type, immutable (hashed name), etag, compressed.
const types = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".webmanifest": "application/manifest+json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".txt": "text/plain; charset=utf-8",
};
const rows = [];
for (const file of walk(out)) {
  const ext = file.slice(file.lastIndexOf("."));
  const type = types[ext];
  if (!type) continue;
  const body = readFileSync(join(out, file));
  const etag = `"${createHash("sha256").update(body).digest("hex").slice(0, 20)}"`;
  const immutable = file.startsWith("assets/") ? 1 : 0;
  let compressed = 0;
  if (!type.startsWith("image/png")) {
    writeFileSync(join(out, file + ".gz"), gzipSync(body, { level: 9 }));
    writeFileSync(
      join(out, file + ".br"),
      brotliCompressSync(body, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }),
    );
    compressed = 1;
  }
  const paths = file === "index.html" ? ["/", "/login"] : [`/${file}`];
  for (const path of paths) rows.push([path, file, type, immutable, etag, compressed].join("\t"));
}
writeFileSync(join(out, "assets.tsv"), rows.join("\n") + "\n");

const jsGz = gzipSync(readFileSync(join(out, js)), { level: 9 }).length;
const jsBr = brotliCompressSync(readFileSync(join(out, js))).length;
console.error(`dashboard: ${js} ${readFileSync(join(out, js)).length} bytes, gzip ${jsGz}, brotli ${jsBr}`);

function* walk(dir, prefix = "") {
  for (const entry of readdirSync(join(dir, prefix), { withFileTypes: true })) {
    const path = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) yield* walk(dir, path);
    else if (!path.endsWith(".gz") && !path.endsWith(".br") && path !== "assets.tsv") yield path;
  }
}

// A square icon: a rounded slate tile (corner radius `round` of the size; 0 fills the square, for
// maskable icons) with a teal ring and a prompt bar: our own drawing, encoded as an RGBA PNG.
function icon(size, round) {
  const px = Buffer.alloc(size * size * 4);
  const r = size * round;
  const c = size / 2;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const i = (y * size + x) * 4;
      const dx = Math.max(r - x - 0.5, x + 0.5 - (size - r), 0);
      const dy = Math.max(r - y - 0.5, y + 0.5 - (size - r), 0);
      const inside = r === 0 || Math.hypot(dx, dy) <= r;
      if (!inside) continue;
      let [R, G, B] = [15, 23, 42];
      const d = Math.hypot(x + 0.5 - c, y + 0.5 - c) / size;
      const angle = Math.atan2(y + 0.5 - c, x + 0.5 - c);
      const gap = angle > -0.6 && angle < 0.6;
      if (d > 0.22 && d < 0.32 && !gap) [R, G, B] = [45, 212, 191];
      const bar = x / size > 0.5 && x / size < 0.72 && y / size > 0.6 && y / size < 0.66;
      if (bar) [R, G, B] = [226, 232, 240];
      px.set([R, G, B, 255], i);
    }
  }
  const raw = Buffer.alloc(size * (size * 4 + 1));
  for (let y = 0; y < size; y++) px.copy(raw, y * (size * 4 + 1) + 1, y * size * 4, (y + 1) * size * 4);
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr.set([8, 6, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(raw, { level: 9 })),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

function crc32(buf) {
  let crc = ~0;
  for (const byte of buf) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0xedb88320 & -(crc & 1));
  }
  return ~crc >>> 0;
}
