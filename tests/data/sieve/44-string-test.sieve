require ["fileinto", "variables"];
set "a" "Hello";
if string :comparator "i;ascii-casemap" :is "${a}" "hello" { fileinto "StringMatch"; }
