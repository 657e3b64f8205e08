#!/usr/bin/env node
// The first load's size: every file index.html pulls in (its scripts,
// module preloads and stylesheets), raw and gzip-compressed (level 9, as a
// server would send it). Fails above the budget of issue 15 (250 KB
// compressed). Run after `npm run build`.
import { readFileSync, readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');
const BUDGET = 250 * 1000;
const html = readFileSync(join(dist, 'index.html'));
const refs = [...html.toString().matchAll(/(?:src|href)="\/([^"]+)"/g)].map((m) => m[1]);
let raw = html.length;
let gz = gzipSync(html, { level: 9 }).length;
const rows = [['index.html', html.length, gz]];
for (const ref of refs) {
  const bytes = readFileSync(join(dist, ref));
  const g = gzipSync(bytes, { level: 9 }).length;
  rows.push([ref, bytes.length, g]);
  raw += bytes.length;
  gz += g;
}
for (const [name, r, g] of rows) console.log(`${name.padEnd(40)} ${String(r).padStart(8)} B  ${String(g).padStart(7)} B gzip`);
const all = readdirSync(join(dist, 'assets')).length;
console.log(`first load: ${raw} B, ${gz} B gzip (${(gz / 1000).toFixed(1)} KB; budget ${BUDGET / 1000} KB); ${all} files in assets/`);
if (gz > BUDGET) {
  console.error('first load is over budget');
  process.exit(1);
}
