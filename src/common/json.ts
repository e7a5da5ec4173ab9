/** Plain JSON values, as stored and validated. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
