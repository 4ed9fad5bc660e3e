const VERSION = "__VERSION__"; const SHELL = "__SHELL__";
