require ["index", "fileinto"];
if header :index 2 :contains "received" "relay" { fileinto "SecondHop"; }
