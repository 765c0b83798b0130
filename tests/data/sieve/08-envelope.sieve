require ["fileinto", "envelope"];
if envelope :domain :is "from" "example.com" { fileinto "FromExample"; }
if envelope :localpart :is "to" "me" { redirect "archive@example.net"; }
