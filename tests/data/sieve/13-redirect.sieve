redirect "alice@example.net";
