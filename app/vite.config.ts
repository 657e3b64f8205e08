// The plantd web app's build: one HTML page, hashed assets under assets/
// (served with a year's cache by plantd), no external URL anywhere.
import { defineConfig } from 'vite';

export default defineConfig({
  // Preact's automatic JSX runtime (no framework plugin needed).
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    sourcemap: false,
    target: 'es2022',
    // One small bundle: the whole app is far under the 250 KB budget.
    chunkSizeWarningLimit: 250,
  },
  server: {
    // `npm run dev` talks to a local `plantd up`.
    proxy: {
      '/v1': { target: 'http://127.0.0.1:8080', ws: true },
      '/openapi.json': 'http://127.0.0.1:8080',
    },
  },
});
