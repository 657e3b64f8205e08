/**
 * The little of Node's `process` the examples use (the package has no
 * dependency on `@types/node`; the SDK itself needs nothing from Node).
 */
declare const process: {
  readonly env: Record<string, string | undefined>;
  readonly argv: string[];
  exit(code?: number): never;
};
