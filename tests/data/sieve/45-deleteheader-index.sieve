require ["editheader", "index", "fileinto"];
deleteheader :index 1 :last "received";
deleteheader :contains "to" "nobody";
if exists "cc" { fileinto "StillCc"; }
