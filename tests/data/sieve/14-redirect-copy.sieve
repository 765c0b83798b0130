require "copy";
redirect :copy "alice@example.net";
