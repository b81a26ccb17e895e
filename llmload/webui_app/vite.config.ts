import react from '@vitejs/plugin-react-swc';
import { defineConfig } from 'vite';

// Relative asset URLs: the page works at any --web-base-path. One bundle, no CDN: the page works offline.
export default defineConfig({
  base: './',
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 4096,
  },
});
