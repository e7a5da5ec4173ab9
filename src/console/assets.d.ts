// esbuild bundles the stylesheet a module imports into the console's .css asset.
declare module "*.css";
