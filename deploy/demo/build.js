// deploy/demo/build.js - bundles the demo into dist/, the directory the gateway serves
// (--static-dir): src/app.js and flushout@1.1.1 from node_modules into one dist/app.js
// (esbuild, no network), plus index.html and style.css copied as they are.
// Run by deploy/quickstart.sh and tests/browser before they start a gateway.
'use strict';
const fs = require('fs');
const path = require('path');
const esbuild = require('esbuild');

const src = path.join(__dirname, 'src');
const dist = path.join(__dirname, 'dist');

fs.rmSync(dist, { recursive: true, force: true });
fs.mkdirSync(dist);
esbuild.buildSync({
  entryPoints: [path.join(src, 'app.js')],
  bundle: true,
  format: 'iife',
  target: ['es2020'],
  minify: true,
  sourcemap: true,
  outfile: path.join(dist, 'app.js'),
  logLevel: 'warning',
});
for (const file of ['index.html', 'style.css']) fs.copyFileSync(path.join(src, file), path.join(dist, file));
console.log(`demo: built ${path.relative(process.cwd(), dist) || '.'}`);
