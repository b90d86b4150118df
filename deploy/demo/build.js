// deploy/demo/build.js - bundles the demo into the directory the gateway serves
// (--static-dir): src/app.js and flushout@1.1.1 from node_modules into one app.js
// (esbuild, no network), plus index.html and style.css copied as they are.
// Run by deploy/quickstart.sh (into deploy/demo/dist) and by tests/browser (into its
// own temporary directory) before they start a gateway.
//
//   node deploy/demo/build.js [OUTDIR]     default: deploy/demo/dist
'use strict';
const fs = require('fs');
const path = require('path');
const esbuild = require('esbuild');

const src = path.join(__dirname, 'src');
const dist = path.resolve(process.argv[2] || path.join(__dirname, 'dist'));

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
