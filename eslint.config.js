import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'collective/native/build/**', '**/*.py', '.carry/**', 'runs/**'] },
  js.configs.recommended,
  {
    // Plain JavaScript files (worker fixtures, scripts) run on Node.js.
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    languageOptions: {
      globals: Object.fromEntries(
        [
          'process',
          'console',
          'Buffer',
          'URL',
          'setTimeout',
          'clearTimeout',
          'setInterval',
          'clearInterval',
          'setImmediate',
          'queueMicrotask',
          'TextEncoder',
          'TextDecoder',
          'performance',
          'structuredClone',
          'AbortController',
          'fetch',
          '__dirname',
          'require',
          'module',
        ].map((g) => [g, 'readonly']),
      ),
    },
  },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-console': 'error',
    },
  },
  {
    // Entry points that talk to a terminal may print; library code takes an injected logger.
    files: [
      'agent/cli.ts',
      'agent/commands/**',
      'bench/**',
      'examples/**',
      'scripts/**',
      'test/**',
      '**/*.mjs',
      '**/*.cjs',
    ],
    rules: { 'no-console': 'off' },
  },
);
