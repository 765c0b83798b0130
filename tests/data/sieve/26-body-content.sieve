require ["body", "fileinto"];
if body :content "text/plain" :contains "café" { fileinto "Cafe"; }
