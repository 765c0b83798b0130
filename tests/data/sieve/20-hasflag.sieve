require ["imap4flags", "fileinto"];
addflag "$Label1";
if hasflag :contains "label" { fileinto "Labelled"; }
