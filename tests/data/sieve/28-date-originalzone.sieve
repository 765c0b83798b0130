require ["date", "fileinto"];
if date :originalzone "date" "hour" "09" { fileinto "NineLocal"; }
